"""Shared-Bottom: one shared network, one tower per domain (Caruana, 1997)."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.data.schema import InputSpec
from mdctr.models.common import BodyMaker
from mdctr.nn.embedding import embedding_from_config
from mdctr.nn.heads import DomainTowers, select_domain


class SharedBottom(nn.Module):
    """embeddings -> the backbone's network -> per-domain towers -> the row's domain logit."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig, make_body: BodyMaker) -> None:
        super().__init__()
        self.embedding = embedding_from_config(spec, cfg)
        self.bottom = make_body()
        self.towers = DomainTowers(self.bottom.feature_width, cfg.tower, spec.domains, cfg.dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding(batch)
        return select_domain(self.towers(self.bottom.features(fields, batch)), batch.domain)
