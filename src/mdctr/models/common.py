"""Pieces the multi-domain models share: embedding the input and the expert networks."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.data.schema import InputSpec
from mdctr.models.backbone import Backbone
from mdctr.nn.embedding import embedding_from_config
from mdctr.nn.mlp import GroupedMLP

BodyMaker = Callable[[], Backbone]
"""Builds a fresh copy of the configured backbone's network, without its embedding."""


class FlatInput(nn.Module):
    """Field embeddings flattened to (B, fields * dim)."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.embedding = embedding_from_config(spec, cfg)
        self.out_features = self.embedding.num_fields * cfg.embedding_dim

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.embedding(batch).flatten(1)


class Experts(nn.Module):
    """G expert networks over the same field embeddings: (fields, batch) -> (B, G, H).

    With the DNN backbone the G MLPs run batched as one GroupedMLP; any other backbone's
    network is built G times by ``make_body`` and stacked.
    """

    def __init__(self, width: int, cfg: ModelConfig, groups: int, make_body: BodyMaker) -> None:
        super().__init__()
        if cfg.backbone == "dnn":
            self.grouped, self.bodies = GroupedMLP(width, cfg.hidden, groups, cfg.dropout), None
            self.out_features = self.grouped.out_features
        else:
            self.grouped, self.bodies = None, nn.ModuleList(make_body() for _ in range(groups))
            self.out_features = self.bodies[0].feature_width

    def forward(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.bodies is None:
            return self.grouped(fields.flatten(1))
        return torch.stack([body.features(fields, batch) for body in self.bodies], 1)


class MixtureOfExperts(nn.Module):
    """MMoE's core: E experts and one softmax gate per domain -> (B, D, H)."""

    def __init__(self, width: int, cfg: ModelConfig, domains: int, make_body: BodyMaker) -> None:
        super().__init__()
        self.experts = Experts(width, cfg, cfg.experts, make_body)
        self.gates = nn.Linear(width, domains * cfg.experts)
        self.domains, self.out_features = domains, self.experts.out_features

    def forward(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        experts = self.experts(fields, batch)  # (B, E, H)
        gates = self.gates(fields.flatten(1)).view(fields.shape[0], self.domains, -1)
        return torch.bmm(torch.softmax(gates, dim=-1), experts)  # (B, D, E) x (B, E, H)
