"""Pooling layers: a sequence of item vectors -> one vector per row."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mdctr.nn.lookup import custom_backward, table_gradient


class _BagMean(torch.autograd.Function):
    """Mean of each row's non-padding vectors, ids (B, L) -> (B, dim), whose backward is one
    ``index_add`` into a dense table gradient (EmbeddingBag's sorts the ids first)."""

    @staticmethod
    def forward(ctx, weight, ids, padding_idx):  # noqa: ANN001, ANN205
        keep = (ids != padding_idx).to(weight.dtype)
        share = keep / keep.sum(1, keepdim=True).clamp(min=1)  # (B, L): 1/count or 0
        vectors = weight.index_select(0, ids.reshape(-1)).view(*ids.shape, weight.shape[1])
        ctx.save_for_backward(ids, share)
        ctx.table_rows, ctx.padding_idx = weight.shape[0], padding_idx
        return (vectors * share.unsqueeze(-1)).sum(1)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        ids, share = ctx.saved_tensors
        rows = (share.unsqueeze(-1) * grad.unsqueeze(1)).reshape(-1, grad.shape[-1])
        return table_gradient(ids, rows, ctx.table_rows, ctx.padding_idx), None, None


class MeanPooling(nn.Module):
    """The mean of a row's item vectors: vectors (B, L, dim) and mask (B, L) -> (B, dim); a row
    without items gets zeros."""

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.unsqueeze(-1).to(vectors.dtype)
        return (vectors * keep).sum(1) / keep.sum(1).clamp(min=1)

    def lookup(
        self, weight: torch.Tensor, ids: torch.Tensor, padding_idx: int, sparse: bool = False
    ) -> torch.Tensor:
        """The same mean read straight from a table: rows ``ids`` (B, L) of ``weight``, where
        ``padding_idx`` marks no item -> (B, dim), without the (B, L, dim) intermediate;
        ``sparse``: a sparse gradient for the table."""
        if custom_backward(weight) and not sparse:
            return _BagMean.apply(weight, ids, padding_idx)
        if torch.compiler.is_exporting():  # a lookup and a masked mean: a few dense ONNX ops
            return self(F.embedding(ids, weight), ids != padding_idx)
        return F.embedding_bag(ids, weight, mode="mean", padding_idx=padding_idx, sparse=sparse)
