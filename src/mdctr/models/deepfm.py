"""DeepFM (Guo et al., 2017): first-order + FM second-order + DNN over shared embeddings."""

from __future__ import annotations

import torch

from mdctr.data.batch import Batch
from mdctr.models.backbone import Backbone
from mdctr.models.linear import FirstOrder
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.interaction import FactorizationMachine
from mdctr.nn.mlp import MLPLayers


class DeepFM(Backbone):
    """logit = bias + sum(first-order weights) + FM(embeddings) + MLP(embeddings)."""

    def __init__(
        self,
        embedding: FieldEmbedding | None,
        fields: int,
        dim: int,
        mlp: MLPLayers,
        first_order: FirstOrder,
        tasks: int = 1,
    ) -> None:
        super().__init__(embedding, fields, dim, tasks)
        self.first_order = first_order
        self.fm = FactorizationMachine()
        self.mlp = mlp.build(fields * dim)
        self._output(self.mlp.out_features)

    def represent(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.mlp(fields.flatten(1))

    def wide(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.first_order(batch) + self.fm(fields)
