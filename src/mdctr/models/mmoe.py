"""MMoE (Ma et al., KDD 2018): shared experts, a softmax gate and a tower per domain."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.models.common import MixtureOfExperts
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.heads import DomainTowers, select_domain


class MMoE(nn.Module):
    """embeddings -> experts -> per-domain gated mixture -> a ``tower`` MLP per domain."""

    def __init__(
        self, embedding: FieldEmbedding, moe: MixtureOfExperts, tower: tuple[int, ...], dropout: float
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.moe = moe
        self.towers = DomainTowers(moe.out_features, tower, moe.domains, dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        return select_domain(self.towers(self.moe(self.embedding(batch), batch)), batch.domain)
