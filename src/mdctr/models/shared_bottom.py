"""Shared-Bottom: one shared network, one tower per domain (Caruana, 1997)."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.models.backbone import Backbone
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.heads import DomainTowers, select_domain


class SharedBottom(nn.Module):
    """embeddings -> the backbone's network -> a ``tower`` MLP per domain -> the row's domain logit."""

    def __init__(
        self,
        embedding: FieldEmbedding,
        bottom: Backbone,
        domains: int,
        tower: tuple[int, ...],
        dropout: float,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.bottom = bottom
        self.towers = DomainTowers(bottom.feature_width, tower, domains, dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding(batch)
        return select_domain(self.towers(self.bottom.features(fields, batch)), batch.domain)
