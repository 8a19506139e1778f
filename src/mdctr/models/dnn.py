"""DNN: field embeddings concatenated into an MLP; the domain is one more field."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.models.backbone import Backbone
from mdctr.nn.embedding import InputSpec, embedding_from_config
from mdctr.nn.mlp import mlp_from_config


class DNN(Backbone):
    """embeddings (B, F, dim) -> flatten -> MLP -> Linear -> logits (B,)."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.embedding = embedding_from_config(spec, cfg)
        self.mlp = mlp_from_config(self.embedding.num_fields * cfg.embedding_dim, cfg)
        self.out_features = self.mlp.out_features
        self.head = nn.Linear(self.out_features, 1)

    def represent(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.mlp(fields.flatten(1))
