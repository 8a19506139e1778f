"""DADNN (JD): a shared bottom (MLP or MMoE), one head per domain, and knowledge transfer
between the heads: every head is distilled towards the mixture of all heads."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.models.common import FlatInput, MixtureOfExperts
from mdctr.nn.embedding import InputSpec
from mdctr.nn.heads import DomainTowers, select_domain
from mdctr.nn.mlp import mlp_from_config


class DADNN(nn.Module):
    """embeddings -> shared bottom -> per-domain heads; ``extra_loss`` is the distillation term."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.input = FlatInput(spec, cfg)
        width = self.input.out_features
        self.bottom = (
            MixtureOfExperts(width, cfg, spec.domains)
            if cfg.bottom == "mmoe"
            else mlp_from_config(width, cfg)
        )
        self.towers = DomainTowers(self.bottom.out_features, cfg.tower, spec.domains, cfg.dropout)
        self.transfer_weight = cfg.transfer_weight
        self._transfer: torch.Tensor | None = None

    def forward(self, batch: Batch) -> torch.Tensor:
        logits = self.towers(self.bottom(self.input(batch)))  # (B, D)
        if self.training and self.transfer_weight > 0:
            teacher = torch.sigmoid(logits).mean(1, keepdim=True).detach().expand_as(logits)
            self._transfer = self.transfer_weight * F.binary_cross_entropy_with_logits(logits, teacher)
        return select_domain(logits, batch.domain)

    def extra_loss(self) -> torch.Tensor:
        """The distillation loss of the last training forward (then forgotten)."""
        loss, self._transfer = self._transfer, None
        return loss if loss is not None else torch.zeros(())
