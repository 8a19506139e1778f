"""Multi-layer perceptron with named dense layers (so adapters can find them by name)."""

from __future__ import annotations

import torch
from torch import nn


class DenseBlock(nn.Module):
    """Linear -> (BatchNorm) -> ReLU -> Dropout."""

    def __init__(self, in_features: int, out_features: int, dropout: float, batch_norm: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.norm = nn.BatchNorm1d(out_features) if batch_norm else nn.Identity()
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.act(self.norm(self.linear(x))))


class MLP(nn.Module):
    """Stack of DenseBlocks: (B, in_features) -> (B, hidden[-1]).

    Example:
        >>> MLP(8, (4, 2))(torch.zeros(3, 8)).shape
        torch.Size([3, 2])
    """

    def __init__(
        self, in_features: int, hidden: tuple[int, ...], dropout: float = 0.0, batch_norm: bool = False
    ) -> None:
        super().__init__()
        sizes = (in_features, *hidden)
        self.layers = nn.ModuleList(
            DenseBlock(a, b, dropout, batch_norm) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.out_features = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
