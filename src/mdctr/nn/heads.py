"""Per-domain output towers and the rule that picks each row's own domain."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.nn.mlp import GroupedMLP


def select_domain(logits: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
    """(B, D) per-domain logits -> (B,): the row's own domain; an unseen domain (id D) gets the
    mean over all domains, the closest to a shared prediction a per-domain model has."""
    d = logits.shape[1]
    own = logits.gather(1, domain.clamp(max=d - 1).unsqueeze(1)).squeeze(1)
    return torch.where(domain < d, own, logits.mean(1))


class DomainTowers(nn.Module):
    """One tower MLP + logit per domain over a per-domain input (B, D, in) or shared (B, in)."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], domains: int, dropout: float) -> None:
        super().__init__()
        self.mlp = GroupedMLP(in_features, hidden, domains, dropout) if hidden else None
        width = hidden[-1] if hidden else in_features
        self.out = nn.Parameter(torch.empty(domains, width))
        self.bias = nn.Parameter(torch.zeros(domains))
        nn.init.uniform_(self.out, -(width**-0.5), width**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """-> (B, D) logits."""
        if self.mlp is not None:
            x = self.mlp(x)
        elif x.dim() == 2:
            x = x.unsqueeze(1)
        return (x * self.out).sum(-1) + self.bias
