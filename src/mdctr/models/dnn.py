"""DNN: field embeddings concatenated into an MLP; the domain is one more field."""

from __future__ import annotations

import torch

from mdctr.data.batch import Batch
from mdctr.models.backbone import Backbone
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.mlp import MLPLayers


class DNN(Backbone):
    """embeddings (B, F, dim) -> flatten -> MLP -> Linear -> logits (B,).

    Example:
        >>> DNN(None, fields=4, dim=8, mlp=MLPLayers((16, 8))).out_features
        8
    """

    def __init__(
        self, embedding: FieldEmbedding | None, fields: int, dim: int, mlp: MLPLayers, tasks: int = 1
    ) -> None:
        super().__init__(embedding, fields, dim, tasks)
        self.mlp = mlp.build(fields * dim)
        self._output(self.mlp.out_features)

    def represent(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.mlp(fields.flatten(1))
