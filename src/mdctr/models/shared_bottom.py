"""Shared-Bottom: one shared MLP, one tower per domain (Caruana, 1997)."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.models.common import FlatInput
from mdctr.nn.embedding import InputSpec
from mdctr.nn.heads import DomainTowers, select_domain
from mdctr.nn.mlp import mlp_from_config


class SharedBottom(nn.Module):
    """embeddings -> shared MLP -> per-domain towers -> the row's domain logit."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.input = FlatInput(spec, cfg)
        self.bottom = mlp_from_config(self.input.out_features, cfg)
        self.towers = DomainTowers(self.bottom.out_features, cfg.tower, spec.domains, cfg.dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        return select_domain(self.towers(self.bottom(self.input(batch))), batch.domain)
