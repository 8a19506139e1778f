"""Optimizers for large embedding tables: sparse gradients, state per row, and one object
that steps a dense and a sparse optimizer together."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import nn

SparseOptimizer = Literal["rowwise_adagrad", "sparse_adam"]


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per table row, as fbgemm's ``EXACT_ROWWISE_ADAGRAD``: for
    every row r with a gradient g_r (dim,) in the step, ``G_r += mean(g_r^2)`` and
    ``w_r -= lr * g_r / (sqrt(G_r) + eps)``. Rows without a gradient are not touched; the state
    is one float per row (Adam keeps two per element). Takes sparse or dense gradients.
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 1e-2, eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # noqa: ARG002 (the Optimizer signature)
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    grad = grad.coalesce()
                    rows, values = grad.indices()[0], grad.values()
                else:
                    rows, values = torch.arange(param.shape[0], device=param.device), grad
                state = self.state[param]
                if "sum" not in state:
                    state["sum"] = param.new_zeros(param.shape[0])
                total = state["sum"].index_add_(0, rows, values.pow(2).mean(1))
                scale = group["lr"] / (total[rows].sqrt_() + group["eps"])
                param.index_add_(0, rows, values * -scale.unsqueeze(1))


def sparse_optimizer(
    params: Sequence[nn.Parameter], kind: SparseOptimizer, lr: float
) -> torch.optim.Optimizer:
    """The optimizer for tables with sparse gradients."""
    if kind == "sparse_adam":
        return torch.optim.SparseAdam(list(params), lr=lr)
    return RowWiseAdagrad(params, lr=lr)


def mark_sparse(model: nn.Module, min_rows: int | None) -> list[nn.Parameter]:
    """Switch every embedding table of at least ``min_rows`` rows to sparse gradients (its
    backward then touches only the batch's rows); return their weights."""
    if min_rows is None:
        return []
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding) and m.num_embeddings >= min_rows]
    for table in tables:
        table.sparse = True
    return [t.weight for t in tables]


class Optimizers:
    """Several optimizers stepped as one (dense Adam for most parameters, a sparse optimizer for
    the big tables). ``state_dict`` is a list of theirs."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.optimizers = list(optimizers)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> list[dict[str, Any]]:
        return [o.state_dict() for o in self.optimizers]

    def load_state_dict(self, states: Sequence[dict[str, Any]]) -> None:
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(state)
