"""DeepFM (Guo et al., 2017): first-order + FM second-order + DNN over shared embeddings."""

from __future__ import annotations

import torch

from mdctr.data.batch import Batch
from mdctr.models.linear import FirstOrder, WideDeep
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.interaction import FactorizationMachine
from mdctr.nn.mlp import MLPLayers


class DeepFM(WideDeep):
    """logit = bias + sum(first-order weights) + FM(embeddings) + MLP(embeddings): Wide & Deep
    with the FM term added to its wide part."""

    def __init__(
        self,
        embedding: FieldEmbedding | None,
        fields: int,
        dim: int,
        mlp: MLPLayers,
        first_order: FirstOrder,
        tasks: int = 1,
    ) -> None:
        super().__init__(embedding, fields, dim, mlp, first_order, tasks)
        self.fm = FactorizationMachine()

    def wide(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        return super().wide(fields, batch) + self.fm(fields)
