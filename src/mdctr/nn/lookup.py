"""Embedding-table lookups whose backward is one ``index_add`` into a dense gradient."""

from __future__ import annotations

import torch
from torch import nn


def table_gradient(
    ids: torch.Tensor, rows: torch.Tensor, table_rows: int, padding_idx: int | None
) -> torch.Tensor:
    """Dense (table_rows, dim) gradient: ``rows`` (n, dim) summed into the rows ``ids`` (n ids)
    by one ``index_add``; the padding row gets none."""
    grad_weight = rows.new_zeros(table_rows, rows.shape[-1]).index_add_(0, ids.reshape(-1), rows)
    if padding_idx is not None:
        grad_weight[padding_idx] = 0
    return grad_weight


class _Lookup(torch.autograd.Function):
    """``weight[rows]`` whose backward is one ``index_add`` into a dense gradient; nn.Embedding's
    backward sorts the indices first."""

    @staticmethod
    def forward(ctx, weight, rows, padding_idx):  # noqa: ANN001, ANN205
        ctx.save_for_backward(rows)
        ctx.table_rows, ctx.padding_idx = weight.shape[0], padding_idx
        return weight.index_select(0, rows.reshape(-1)).view(*rows.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (rows,) = ctx.saved_tensors
        grad_rows = grad.reshape(-1, grad.shape[-1])
        return table_gradient(rows, grad_rows, ctx.table_rows, ctx.padding_idx), None, None


def custom_backward(tensor: torch.Tensor) -> bool:
    """Whether an op on ``tensor`` should run as its hand-written autograd Function: gradients
    are recorded for it and no export is tracing (exports keep the plain, traceable ops)."""
    return torch.is_grad_enabled() and tensor.requires_grad and not torch.compiler.is_exporting()


def lookup(table: nn.Embedding, rows: torch.Tensor) -> torch.Tensor:
    """``table(rows)``, with a faster dense backward while training (same values and gradients);
    a ``sparse`` table keeps torch's sparse gradient (the batch's rows only)."""
    if custom_backward(table.weight) and not table.sparse:
        return _Lookup.apply(table.weight, rows, table.padding_idx)
    return table(rows)
