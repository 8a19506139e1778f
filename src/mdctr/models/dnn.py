"""DNN: field embeddings concatenated into an MLP; the domain is one more field."""

from __future__ import annotations

import torch

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.data.schema import InputSpec
from mdctr.models.backbone import Backbone
from mdctr.nn.mlp import mlp_from_config


class DNN(Backbone):
    """embeddings (B, F, dim) -> flatten -> MLP -> Linear -> logits (B,)."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig, body_only: bool = False) -> None:
        super().__init__(body_only)
        self._embed(spec, cfg)
        self.mlp = mlp_from_config(self.num_fields * cfg.embedding_dim, cfg)
        self._output(self.mlp.out_features)

    def represent(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.mlp(fields.flatten(1))
