"""Field embeddings: every input column becomes one (B, dim) field vector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch

EmbeddingKind = Literal["table", "hashed", "unified"]
PRIME = 2_147_483_647  # 2^31 - 1: ids and multipliers below it keep every product inside int64


def _table_gradient(
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
    backward sorts the indices first and measured 3x slower for a batch's lookups on CPU."""

    @staticmethod
    def forward(ctx, weight, rows, padding_idx):  # noqa: ANN001, ANN205
        ctx.save_for_backward(rows)
        ctx.table_rows, ctx.padding_idx = weight.shape[0], padding_idx
        return weight.index_select(0, rows.reshape(-1)).view(*rows.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (rows,) = ctx.saved_tensors
        grad_rows = grad.reshape(-1, grad.shape[-1])
        return _table_gradient(rows, grad_rows, ctx.table_rows, ctx.padding_idx), None, None


class _BagMean(torch.autograd.Function):
    """Mean of each row's non-padding vectors, ids (B, L) -> (B, dim), with the same one
    ``index_add`` backward as ``_Lookup`` (EmbeddingBag's backward sorts the ids first)."""

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
        return _table_gradient(ids, rows, ctx.table_rows, ctx.padding_idx), None, None


def custom_backward(tensor: torch.Tensor) -> bool:
    """Whether an op on ``tensor`` should run as its hand-written autograd Function: gradients
    are recorded for it and no export is tracing (exports keep the plain, traceable ops)."""
    return torch.is_grad_enabled() and tensor.requires_grad and not torch.compiler.is_exporting()


def lookup(table: nn.Embedding, rows: torch.Tensor) -> torch.Tensor:
    """``table(rows)``, with a faster backward while training (same values and gradients)."""
    return (
        _Lookup.apply(table.weight, rows, table.padding_idx) if custom_backward(table.weight) else table(rows)
    )


class SaltedHash(nn.Module):
    """Deterministic universal hashing of ids: ``((a * id + b) mod p) mod buckets`` with ``(a, b)``
    fixed per feature and chunk (no Python ``hash()``: the same rows in every process; exportable
    as Mul/Add/Mod). ids (B, F) -> rows (B, F, chunks)."""

    def __init__(self, features: int, chunks: int, buckets: int, per_feature_rows: bool) -> None:
        super().__init__()
        salt = torch.arange(features * chunks, dtype=torch.long).view(features, chunks) + 1
        self.register_buffer("a", (salt * 48_271 * 7_919 + 12_345) % (PRIME - 1) + 1, persistent=False)
        self.register_buffer("b", (salt * 16_807 * 104_729 + 6_789) % PRIME, persistent=False)
        base = torch.arange(features, dtype=torch.long).view(features, 1) * buckets
        self.register_buffer("base", base if per_feature_rows else torch.zeros_like(base), persistent=False)
        self.buckets = buckets

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mixed = torch.remainder(ids.unsqueeze(-1) % PRIME * self.a + self.b, PRIME)
        return torch.remainder(mixed, self.buckets) + self.base


class FeatureGate(nn.Module):
    """OptFS: one gate per categorical value (row of the fused table), ``sigmoid(t * logit)``.

    The temperature ``t`` grows from 1 to ``final_temperature`` over training (``set_progress``),
    so the gates end near 0 or 1; ``extra_loss`` is ``l1`` times the mean gate of the last
    training batch's values. A value is selected when its logit ends positive.

    The penalty covers the batch's values only, so it meets each value as often as its data
    does. Over the whole table, Adam's per-parameter scaling turned the tiny penalty of a value
    absent from the batch into a full-size step: every rare value closed whatever ``l1`` was
    (ml1m-gender: l1 = 0.0003 and 0.001 both dropped 17-21 % of the users, retrained AUC -0.0016).
    """

    def __init__(self, rows: int, init: float, l1: float, final_temperature: float) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.full((rows,), float(init)))
        self.l1, self.final = l1, final_temperature
        # a buffer, so the best epoch's weights come back with that epoch's temperature
        self.register_buffer("temperature", torch.ones(()))
        self._batch_gates: torch.Tensor | None = None

    def set_progress(self, fraction: float) -> None:
        """Training progress in [0, 1] -> temperature 1 ... final (geometric)."""
        self.temperature.fill_(self.final ** min(max(fraction, 0.0), 1.0))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.temperature * self.logit[rows])
        if self.training:
            self._batch_gates = gates
        return gates

    def extra_loss(self) -> torch.Tensor:
        """``l1`` times the mean gate of the last training forward's values (then forgotten)."""
        gates, self._batch_gates = self._batch_gates, None
        return self.l1 * gates.mean() if gates is not None else self.logit.new_zeros(())

    def selected(self) -> torch.Tensor:
        return self.logit.detach() > 0


@dataclass(frozen=True)
class InputSpec:
    """What the model sees: table sizes per categorical and sequence feature, numeric count, domains."""

    categorical: tuple[int, ...]
    sequence: tuple[int, ...]
    numeric: int
    domains: int

    def fields(self, domain_as_feature: bool) -> int:
        return len(self.categorical) + len(self.sequence) + self.numeric + int(domain_as_feature)


class FieldEmbedding(nn.Module):
    """Embeds a Batch into fields (B, n_fields, dim).

    Categorical features share one fused table (one lookup for all of them, rows offset per
    feature); each sequence feature is mean-pooled over its non-PAD items; each numeric feature
    scales a learned vector; the domain, when used as a feature, has its own table whose row D
    (unseen domain) is fixed at zero so an unseen domain gets the shared prediction.

    Example:
        >>> emb = FieldEmbedding(InputSpec((10, 5), (7,), 1, 2), dim=4)
        >>> emb.num_fields
        5
    """

    def __init__(
        self,
        spec: InputSpec,
        dim: int,
        init_std: float = 1e-4,
        domain_as_feature: bool = True,
        kind: EmbeddingKind = "table",
        buckets: int = 0,
        chunks: int = 1,
        gate: FeatureGate | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.kind = dim, kind
        self.num_fields = spec.fields(domain_as_feature)
        n = len(spec.categorical)
        sizes = torch.tensor((0, *spec.categorical), dtype=torch.long)
        self.register_buffer("offsets", torch.cumsum(sizes, 0)[:-1].clone(), persistent=False)
        if kind == "table":
            self.categorical = nn.Embedding(max(int(sizes.sum()), 1), dim)
            self.hash = None
        else:
            if buckets < 1:
                raise ValueError(f"embedding kind {kind!r} needs buckets >= 1")
            chunks = chunks if kind == "unified" else 1
            if dim % chunks:
                raise ValueError(f"embedding_dim {dim} is not divisible by {chunks} chunks")
            rows = buckets * (n if kind == "hashed" else 1)
            self.categorical = nn.Embedding(max(rows, 1), dim // chunks)
            # feature f's chunk c has its own hash; ``hashed`` also gives each feature its own rows
            self.hash = SaltedHash(n, chunks, buckets, per_feature_rows=kind == "hashed")
        self.sequence = nn.ModuleList(
            nn.EmbeddingBag(size, dim, mode="mean", padding_idx=0) for size in spec.sequence
        )
        if gate is not None and kind != "table":
            raise ValueError("OptFS gates need embedding kind 'table'")
        self.gate = gate
        self.numeric = nn.Parameter(torch.empty(spec.numeric, dim))
        self.domain = (
            nn.Embedding(spec.domains + 1, dim, padding_idx=spec.domains) if domain_as_feature else None
        )
        self.reset_parameters(init_std)

    def reset_parameters(self, init_std: float) -> None:
        with torch.no_grad():
            for table in (self.categorical, *self.sequence, self.domain):
                if table is not None:
                    nn.init.normal_(table.weight, std=init_std)
                    if table.padding_idx is not None:
                        table.weight[table.padding_idx].zero_()
            nn.init.normal_(self.numeric, std=init_std)

    def forward(self, batch: Batch) -> torch.Tensor:
        parts = []
        if batch.sparse.shape[1]:
            if self.hash is None:
                rows = batch.sparse + self.offsets
                vectors = lookup(self.categorical, rows)
                parts.append(vectors if self.gate is None else vectors * self.gate(rows).unsqueeze(-1))
            else:
                rows = self.hash(batch.sparse)  # (B, F, chunks)
                parts.append(lookup(self.categorical, rows).flatten(2))
        pool = _traceable_mean if torch.compiler.is_exporting() else _bag_mean
        parts.extend(
            pool(bag, ids).unsqueeze(1) for bag, ids in zip(self.sequence, batch.sequences, strict=True)
        )
        if self.numeric.shape[0]:
            parts.append(batch.dense.unsqueeze(-1) * self.numeric)
        if self.domain is not None:
            parts.append(lookup(self.domain, batch.domain).unsqueeze(1))
        return torch.cat(parts, dim=1)


def _bag_mean(bag: nn.EmbeddingBag, ids: torch.Tensor) -> torch.Tensor:
    """``bag(ids)``, with a faster backward while training (same values and gradients)."""
    return _BagMean.apply(bag.weight, ids, bag.padding_idx) if custom_backward(bag.weight) else bag(ids)


def _traceable_mean(bag: nn.EmbeddingBag, ids: torch.Tensor) -> torch.Tensor:
    """``bag(ids)`` as a lookup and a masked mean: exports to a few dense ONNX ops, where
    EmbeddingBag becomes a per-row loop."""
    mask = (ids != bag.padding_idx).unsqueeze(-1).to(bag.weight.dtype)
    return (nn.functional.embedding(ids, bag.weight) * mask).sum(1) / mask.sum(1).clamp(min=1)


def embedding_from_config(
    spec: InputSpec, cfg: ModelConfig, first_order: bool = False, domain_as_feature: bool | None = None
) -> FieldEmbedding:
    """The field embedding a model config describes (``embedding_dim``, ``embedding.kind``,
    OptFS gates); ``first_order``: one weight per value instead (unchunked, ungated)."""
    e, search = cfg.embedding, cfg.optfs
    gate = None
    if search.search and not first_order:
        gate = FeatureGate(max(sum(spec.categorical), 1), search.init, search.l1, search.final_temperature)
    return FieldEmbedding(
        spec,
        1 if first_order else cfg.embedding_dim,
        cfg.embedding_init_std,
        cfg.domain_as_feature if domain_as_feature is None else domain_as_feature,
        e.kind,
        e.buckets,
        1 if first_order else e.chunks,
        gate,
    )
