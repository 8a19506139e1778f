"""MMoE (Ma et al., KDD 2018): shared experts, a softmax gate and a tower per domain."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.data.schema import InputSpec
from mdctr.models.common import BodyMaker, MixtureOfExperts
from mdctr.nn.embedding import embedding_from_config
from mdctr.nn.heads import DomainTowers, select_domain


class MMoE(nn.Module):
    """embeddings -> E experts (the backbone's network) -> per-domain gated mixture -> tower."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig, make_body: BodyMaker) -> None:
        super().__init__()
        self.embedding = embedding_from_config(spec, cfg)
        width = self.embedding.num_fields * cfg.embedding_dim
        self.moe = MixtureOfExperts(width, cfg, spec.domains, make_body)
        self.towers = DomainTowers(self.moe.out_features, cfg.tower, spec.domains, cfg.dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        return select_domain(self.towers(self.moe(self.embedding(batch), batch)), batch.domain)
