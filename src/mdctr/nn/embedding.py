"""Field embeddings: every input column becomes one (B, dim) field vector."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mdctr.data.batch import PAD, Batch
from mdctr.data.schema import InputSpec
from mdctr.nn.lookup import lookup
from mdctr.nn.pooling import MeanPooling

EmbeddingKind = Literal["table", "hashed", "unified"]
PRIME = 2_147_483_647  # 2^31 - 1: ids and multipliers below it keep every product inside int64


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

    def feature(self, ids: torch.Tensor, f: int) -> torch.Tensor:
        """Rows of feature ``f``'s hashes for ids of any shape (S...) -> (S..., chunks)."""
        mixed = torch.remainder(ids.unsqueeze(-1) % PRIME * self.a[f] + self.b[f], PRIME)
        return torch.remainder(mixed, self.buckets) + self.base[f]


class FeatureGate(nn.Module):
    """OptFS: one gate per categorical value (row of the fused table), ``sigmoid(t * logit)``.

    The temperature ``t`` grows from 1 to ``final_temperature`` over training (``set_progress``),
    so the gates end near 0 or 1; ``extra_loss`` is ``l1`` times the mean gate of the last
    training batch's values. A value is selected when its logit ends positive.

    The penalty covers the batch's values only, so it meets each value as often as its data
    does (over the whole table, Adam's per-parameter scaling would turn the tiny penalty of a
    value absent from the batch into a full-size step and close every rare value).
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


def fused_starts(spec: InputSpec) -> list[int]:
    """Each categorical feature's first row in the fused table (a feature reading another's
    vocabulary owns no rows: its start is where the next owner's rows begin)."""
    starts, row = [], 0
    for f, size in enumerate(spec.categorical):
        starts.append(row)
        row += size if spec.table_of(f) == f else 0
    return starts


def fused_rows(spec: InputSpec) -> int:
    """Rows of the fused categorical table: the sum of the owned vocabularies."""
    return sum(size for f, size in enumerate(spec.categorical) if spec.table_of(f) == f)


class FieldEmbedding(nn.Module):
    """Embeds a Batch into fields (B, n_fields, dim).

    Categorical features share one fused table (one lookup for all of them, rows offset per
    table); a feature that shares another's vocabulary (``InputSpec.owner``) reads that
    feature's rows. Each sequence feature is pooled by its layer in ``pooling`` (default: the
    mean of its items); ``None`` there leaves the sequence out of the fields, for a model that
    reads it unpooled with ``sequence_vectors``. Each numeric feature scales a learned vector;
    the domain, when used as a feature, has its own table whose row D (unseen domain) is fixed at
    zero so an unseen domain gets the shared prediction.

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
        pooling: tuple[nn.Module | None, ...] | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.kind = dim, kind
        n, m = len(spec.categorical), len(spec.sequence)
        owner = [spec.table_of(i) for i in range(n + m)]
        if kind != "table" and owner[:n] != list(range(n)):
            raise ValueError("categorical features sharing a vocabulary need embedding kind 'table'")
        starts = fused_starts(spec)
        # every id feature's first row in the fused table (a sequence's only when a categorical owns it)
        firsts = [starts[o] if o < n else 0 for o in owner]
        self.register_buffer("offsets", torch.tensor(firsts[:n], dtype=torch.long), persistent=False)
        if kind == "table":
            self.categorical = nn.Embedding(max(fused_rows(spec), 1), dim)
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
        tables = [i for i in range(m) if owner[n + i] == n + i]
        self.sequence = nn.ModuleList(nn.Embedding(spec.sequence[i], dim, padding_idx=PAD) for i in tables)
        # where sequence i reads: (True, categorical owner, its first row) or (False, own table, 0)
        self.sources = [
            (True, o, firsts[n + i]) if o < n else (False, tables.index(o - n), 0)
            for i, o in enumerate(owner[n:])
        ]
        layers = pooling if pooling is not None else tuple(MeanPooling() for _ in range(m))
        self.pooling = nn.ModuleList(p if p is not None else nn.Identity() for p in layers)
        self.pooled = [p is not None for p in layers]
        if gate is not None and kind != "table":
            raise ValueError("OptFS gates need embedding kind 'table'")
        self.gate = gate
        self.numeric = nn.Parameter(torch.empty(spec.numeric, dim))
        self.domain = (
            nn.Embedding(spec.domains + 1, dim, padding_idx=spec.domains) if domain_as_feature else None
        )
        self.num_fields = spec.fields(domain_as_feature) - self.pooled.count(False)
        self.reset_parameters(init_std)

    def reset_parameters(self, init_std: float) -> None:
        with torch.no_grad():
            for table in (self.categorical, *self.sequence, self.domain):
                if table is not None:
                    nn.init.normal_(table.weight, std=init_std)
                    if table.padding_idx is not None:
                        table.weight[table.padding_idx].zero_()
            nn.init.normal_(self.numeric, std=init_std)

    def sequence_vectors(self, batch: Batch, i: int) -> torch.Tensor:
        """Sequence ``i`` unpooled: (B, max_len, dim), zeros at PAD positions."""
        ids = batch.sequences[i]
        fused, table, first = self.sources[i]
        if not fused:
            return lookup(self.sequence[table], ids)
        if self.hash is None:
            vectors = lookup(self.categorical, ids + first)
        else:
            vectors = lookup(self.categorical, self.hash.feature(ids, table)).flatten(2)
        return vectors * batch.mask(i).unsqueeze(-1).to(vectors.dtype)

    def _pool(self, batch: Batch, i: int) -> torch.Tensor:
        """Sequence ``i`` through its pooling layer: (B, dim)."""
        pool, (fused, table, first) = self.pooling[i], self.sources[i]
        if isinstance(pool, MeanPooling) and (self.hash is None or not fused):
            source = self.categorical if fused else self.sequence[table]
            ids = batch.sequences[i] + first if fused else batch.sequences[i]
            return pool.lookup(source.weight, ids, first, source.sparse)
        return pool(self.sequence_vectors(batch, i), batch.mask(i))

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
        parts.extend(self._pool(batch, i).unsqueeze(1) for i, on in enumerate(self.pooled) if on)
        if self.numeric.shape[0]:
            parts.append(batch.dense.unsqueeze(-1) * self.numeric)
        if self.domain is not None:
            parts.append(lookup(self.domain, batch.domain).unsqueeze(1))
        return torch.cat(parts, dim=1)
