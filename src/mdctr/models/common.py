"""Pieces the multi-domain models share: the flat input and the expert networks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.models.backbone import Backbone
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.mlp import GroupedMLP

BodyMaker = Callable[[], Backbone]
"""Builds a fresh copy of the configured backbone's network, without its embedding."""


class FlatInput(nn.Module):
    """Field embeddings flattened to (B, fields * dim)."""

    def __init__(self, embedding: FieldEmbedding, dim: int) -> None:
        super().__init__()
        self.embedding = embedding
        self.out_features = embedding.num_fields * dim

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.embedding(batch).flatten(1)


class Experts(nn.Module):
    """G expert networks over the same field embeddings: (fields, batch) -> (B, G, H).

    Either G backbone networks (``bodies``), stacked, or G MLPs run batched as one GroupedMLP
    over the flat fields (``grouped``).
    """

    def __init__(self, bodies: Sequence[Backbone] = (), grouped: GroupedMLP | None = None) -> None:
        super().__init__()
        if (grouped is None) == (not bodies):
            raise ValueError("Experts needs either backbone bodies or one GroupedMLP")
        self.grouped, self.bodies = grouped, nn.ModuleList(bodies) if bodies else None
        self.groups = grouped.groups if grouped is not None else len(bodies)
        self.out_features = grouped.out_features if grouped is not None else bodies[0].feature_width

    def forward(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.bodies is None:
            return self.grouped(fields.flatten(1))
        return torch.stack([body.features(fields, batch) for body in self.bodies], 1)


class MixtureOfExperts(nn.Module):
    """MMoE's core: the experts and one softmax gate per domain over them -> (B, D, H)."""

    def __init__(self, experts: Experts, width: int, domains: int) -> None:
        super().__init__()
        self.experts = experts
        self.gates = nn.Linear(width, domains * experts.groups)
        self.domains, self.out_features = domains, experts.out_features

    def forward(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        experts = self.experts(fields, batch)  # (B, E, H)
        gates = self.gates(fields.flatten(1)).view(fields.shape[0], self.domains, -1)
        return torch.bmm(torch.softmax(gates, dim=-1), experts)  # (B, D, E) x (B, E, H)
