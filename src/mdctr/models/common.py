"""Pieces the multi-domain models share: embedding the input and the expert mixture."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.nn.embedding import InputSpec, embedding_from_config
from mdctr.nn.mlp import GroupedMLP


class FlatInput(nn.Module):
    """Field embeddings flattened to (B, fields * dim)."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.embedding = embedding_from_config(spec, cfg)
        self.out_features = self.embedding.num_fields * cfg.embedding_dim

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.embedding(batch).flatten(1)


class MixtureOfExperts(nn.Module):
    """MMoE's core: E expert MLPs and one softmax gate per domain -> (B, D, hidden[-1])."""

    def __init__(self, in_features: int, cfg: ModelConfig, domains: int) -> None:
        super().__init__()
        self.experts = GroupedMLP(in_features, cfg.hidden, cfg.experts, cfg.dropout)
        self.gates = nn.Linear(in_features, domains * cfg.experts)
        self.domains, self.out_features = domains, self.experts.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        experts = self.experts(x)  # (B, E, H)
        gates = torch.softmax(self.gates(x).view(x.shape[0], self.domains, -1), dim=-1)  # (B, D, E)
        return torch.bmm(gates, experts)
