"""Feature-interaction layers."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.nn.lookup import custom_backward


def _pairwise(fields: torch.Tensor, field_sum: torch.Tensor) -> torch.Tensor:
    """0.5 * sum_k ((sum_f e_fk)^2 - sum_f e_fk^2) = sum over field pairs of <e_i, e_j>."""
    return 0.5 * (field_sum.pow(2) - fields.pow(2).sum(dim=1)).sum(dim=1)


class _FMFunction(torch.autograd.Function):
    """The FM term with its closed-form gradient ``g * (sum_f e_f - e_i)``: 2 ops backward where
    autograd runs about 10."""

    @staticmethod
    def forward(ctx, fields):  # noqa: ANN001, ANN205
        field_sum = fields.sum(dim=1)
        ctx.save_for_backward(fields, field_sum)
        return _pairwise(fields, field_sum)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        fields, field_sum = ctx.saved_tensors
        return (field_sum.unsqueeze(1) - fields) * grad.view(-1, 1, 1)


class FactorizationMachine(nn.Module):
    """Second-order FM term over fields (B, F, dim) -> (B,): sum over pairs of <e_i, e_j>."""

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        if custom_backward(fields):
            return _FMFunction.apply(fields)
        return _pairwise(fields, fields.sum(dim=1))


class CrossLayer(nn.Module):
    """DCNv2 cross layer: ``x_{l+1} = x_0 * (W x_l + b) + x_l`` with a full-rank ``W`` (``linear``)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class LowRankMixtureCrossLayer(nn.Module):
    """DCN-Mix cross layer: a gate mixes K experts ``x_0 * (U_k tanh(C_k tanh(V_k^T x_l)) + b)``, + x_l."""

    def __init__(self, features: int, rank: int, experts: int) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.empty(experts, features, rank))
        self.c = nn.Parameter(torch.empty(experts, rank, rank))
        self.u = nn.Parameter(torch.empty(experts, rank, features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.gate = nn.Linear(features, experts) if experts > 1 else None
        for weight in (self.v, self.c, self.u):
            nn.init.xavier_uniform_(weight)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        low = torch.tanh(torch.einsum("bi,kir->bkr", x, self.v))
        low = torch.tanh(torch.einsum("bkr,krs->bks", low, self.c))
        experts = x0.unsqueeze(1) * (torch.einsum("bkr,kri->bki", low, self.u) + self.bias)  # (B, K, F)
        if self.gate is None:
            return experts.squeeze(1) + x
        weights = torch.softmax(self.gate(x), dim=-1).unsqueeze(-1)
        return (weights * experts).sum(1) + x


class CrossNetwork(nn.Module):
    """Stacked cross layers over the flat embeddings: (B, F) -> (B, F)."""

    def __init__(self, features: int, layers: int, rank: int | None = None, experts: int = 1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            CrossLayer(features) if rank is None else LowRankMixtureCrossLayer(features, rank, experts)
            for _ in range(layers)
        )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x


class InteractingLayer(nn.Module):
    """AutoInt's multi-head self-attention over fields (B, F, d_in) -> (B, F, heads * dim), with a
    residual projection and ReLU; attention weights are softmax(QK^T / sqrt(dim)) over fields."""

    def __init__(self, in_dim: int, dim: int, heads: int, residual: bool) -> None:
        super().__init__()
        self.heads, self.dim = heads, dim
        self.query = nn.Linear(in_dim, heads * dim, bias=False)
        self.key = nn.Linear(in_dim, heads * dim, bias=False)
        self.value = nn.Linear(in_dim, heads * dim, bias=False)
        self.residual = nn.Linear(in_dim, heads * dim, bias=False) if residual else None
        self.out_dim = heads * dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        b, f, _ = fields.shape

        def split(x: torch.Tensor) -> torch.Tensor:  # (B, F, H*d) -> (B, H, F, d)
            return x.view(b, f, self.heads, self.dim).transpose(1, 2)

        q, k, v = split(self.query(fields)), split(self.key(fields)), split(self.value(fields))
        weights = torch.softmax(q @ k.transpose(-1, -2) / self.dim**0.5, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(b, f, self.out_dim)
        if self.residual is not None:
            out = out + self.residual(fields)
        return torch.relu(out)


class PairwiseInnerProduct(nn.Module):
    """IPNN's product layer: <e_i, e_j> for every field pair i < j: (B, F, dim) -> (B, F(F-1)/2)."""

    def __init__(self, fields: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(fields, fields, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.out_features = rows.numel()

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        gram = fields @ fields.transpose(1, 2)
        return gram[:, self.rows, self.cols]
