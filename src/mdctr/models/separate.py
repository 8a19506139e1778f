"""Separate models: one independent backbone per domain, each trained on its own rows only
(trained in one loop: a row's gradient reaches only its domain's model)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.nn.domain import DomainRouting
from mdctr.nn.heads import select_domain


class Separate(nn.Module):
    """``domains`` copies of a backbone; an unseen domain gets the mean of all their logits."""

    def __init__(self, build: Callable[[], nn.Module], domains: int) -> None:
        super().__init__()
        self.models = nn.ModuleList(build() for _ in range(domains))
        self.routing = DomainRouting(domains)

    def domain_parts(self) -> list[nn.Module]:
        """The per-domain models: the trainer early-stops each on its own domain."""
        return list(self.models)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.routing.run(batch, self._forward)

    def _forward(self, batch: Batch) -> torch.Tensor:
        segments = self.routing.segments
        if segments is None:
            return select_domain(torch.stack([m(batch) for m in self.models], 1), batch.domain)
        parts = []
        for d, a, b in segments:
            rows = batch.index(slice(a, b))
            if d < len(self.models):
                parts.append(self.models[d](rows))
            else:
                parts.append(torch.stack([m(rows) for m in self.models], 1).mean(1))
        return torch.cat(parts)
