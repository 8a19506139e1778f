"""DADNN (JD): a shared bottom (the backbone's network, or an MMoE of them), one head per domain, and knowledge transfer
between the heads: every head is distilled towards the mixture of all heads."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mdctr.data.batch import Batch
from mdctr.models.backbone import Backbone
from mdctr.models.common import MixtureOfExperts
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.heads import DomainTowers, select_domain


class DADNN(nn.Module):
    """embeddings -> shared bottom (``bottom``, or ``moe``) -> per-domain heads; ``extra_loss``
    is the distillation term, weighted by ``transfer_weight``."""

    def __init__(
        self,
        embedding: FieldEmbedding,
        bottom: Backbone | MixtureOfExperts,
        domains: int,
        tower: tuple[int, ...],
        dropout: float,
        transfer_weight: float,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        mixture = isinstance(bottom, MixtureOfExperts)
        self.moe = bottom if mixture else None
        self.bottom = None if mixture else bottom
        features = bottom.out_features if mixture else bottom.feature_width
        self.towers = DomainTowers(features, tower, domains, dropout)
        self.transfer_weight = transfer_weight
        self._transfer: torch.Tensor | None = None

    def forward(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding(batch)
        shared = self.moe(fields, batch) if self.moe is not None else self.bottom.features(fields, batch)
        logits = self.towers(shared)  # (B, D)
        if self.training and self.transfer_weight > 0:
            teacher = torch.sigmoid(logits).mean(1, keepdim=True).detach().expand_as(logits)
            self._transfer = self.transfer_weight * F.binary_cross_entropy_with_logits(logits, teacher)
        return select_domain(logits, batch.domain)

    def extra_loss(self) -> torch.Tensor:
        """The distillation loss of the last training forward (then forgotten)."""
        loss, self._transfer = self._transfer, None
        return loss if loss is not None else torch.zeros(())
