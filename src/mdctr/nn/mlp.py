"""Multi-layer perceptron with named dense layers (so adapters can find them by name)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class Dropout(nn.Module):
    """Inverted dropout (drop with probability ``p``, scale the rest to keep the mean).

    On CPU the mask is drawn as raw 16-bit words of numpy's SFC64 generator and built in numpy
    as one float32 array (0 or the scale), so the layer costs one multiply each way. Each call
    seeds the generator from torch's global one, so ``torch.manual_seed`` and a checkpointed
    torch RNG state reproduce every mask. ``p`` is rounded to a multiple of 1/65536.
    """

    LEVELS = 1 << 16

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.threshold = min(round(p * self.LEVELS), self.LEVELS - 1)
        self.scale = self.LEVELS / (self.LEVELS - self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, training=True)
        seed = int(torch.randint(0, 1 << 62, ()))
        words = np.random.SFC64(seed).random_raw(-(-x.numel() // 4)).view(np.uint16)[: x.numel()]
        mask = np.multiply(words >= self.threshold, np.float32(self.scale), dtype=np.float32)
        return x * torch.from_numpy(mask).view(x.shape).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DenseBlock(nn.Module):
    """Linear -> (BatchNorm) -> ReLU -> Dropout."""

    def __init__(self, in_features: int, out_features: int, dropout: float, batch_norm: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.norm = nn.BatchNorm1d(out_features) if batch_norm else nn.Identity()
        self.act = nn.ReLU()
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.act(self.norm(self.linear(x))))


class MLP(nn.Module):
    """Stack of DenseBlocks: (B, in_features) -> (B, hidden[-1]).

    Example:
        >>> MLP(8, (4, 2))(torch.zeros(3, 8)).shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...],
        dropout: float = 0.0,
        batch_norm: bool = False,
        input_norm: bool = False,
    ) -> None:
        super().__init__()
        self.input_norm = nn.BatchNorm1d(in_features) if input_norm else nn.Identity()
        sizes = (in_features, *hidden)
        self.layers = nn.ModuleList(
            DenseBlock(a, b, dropout, batch_norm) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.out_features = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(x)
        for layer in self.layers:
            x = layer(x)
        return x


@dataclass(frozen=True)
class MLPLayers:
    """The shape of an MLP, before its input width is known: hidden sizes, dropout, batch norm
    after each layer, batch norm over its input."""

    hidden: tuple[int, ...]
    dropout: float = 0.0
    batch_norm: bool = False
    input_norm: bool = False

    def build(self, in_features: int) -> MLP:
        return MLP(in_features, self.hidden, self.dropout, self.batch_norm, self.input_norm)


class GroupedMLP(nn.Module):
    """G independent MLPs run as batched matmuls: (B, in) or (B, G, in) -> (B, G, hidden[-1]).

    Used for experts (G = number of experts) and per-domain towers (G = domains).
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...], groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        sizes = (in_features, *hidden)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(groups, a, b)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(groups, b)) for b in sizes[1:])
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.groups, self.out_features = groups, sizes[-1]
        for weight in self.weights:
            bound = 1 / weight.shape[1] ** 0.5
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for weight, bias in zip(self.weights, self.biases, strict=True):
            if x.dim() == 2:
                x = (x @ weight.permute(1, 0, 2).reshape(weight.shape[1], -1)).view(
                    x.shape[0], self.groups, -1
                )
            else:
                x = torch.einsum("bgi,gio->bgo", x, weight)
            x = self.dropout(torch.relu(x + bias))
        return x
