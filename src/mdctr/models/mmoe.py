"""MMoE (Ma et al., KDD 2018): shared experts, a softmax gate and a tower per domain."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.models.common import FlatInput, MixtureOfExperts
from mdctr.nn.embedding import InputSpec
from mdctr.nn.heads import DomainTowers, select_domain


class MMoE(nn.Module):
    """embeddings -> E experts -> per-domain gated mixture -> per-domain tower."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.input = FlatInput(spec, cfg)
        self.moe = MixtureOfExperts(self.input.out_features, cfg, spec.domains)
        self.towers = DomainTowers(self.moe.out_features, cfg.tower, spec.domains, cfg.dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        return select_domain(self.towers(self.moe(self.input(batch))), batch.domain)
