"""Vocabularies (PAD=0, OOV=1, min count, size cap) and numeric scalers, fitted with polars on
the training split (a frame, or a lazy scan of parquet files in one streamed pass) and applied
to any table: raw columns in, compact integer/float arrays out."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from mdctr.data.cache import atomic_write_text
from mdctr.data.schema import InputSpec, Schema
from mdctr.data.table import check_table, domain_key
from mdctr.errors import InputError

PAD, OOV = 0, 1


@dataclass(frozen=True)
class Encoded:
    """A table as arrays. ``domain`` holds 0..D-1 for known domains and D for an unseen one.

    sparse (N, n_categorical) int64; sequences: each (N, max_len) int64, items first, then PAD;
    dense (N, n_numeric) float32; domain (N,) int64; labels (N, tasks) float32; user (N,) int64
    group ids for GAUC; oracle (N,) float64 true click probabilities.
    """

    sparse: np.ndarray
    sequences: tuple[np.ndarray, ...]
    dense: np.ndarray
    domain: np.ndarray
    labels: np.ndarray | None
    user: np.ndarray | None = None
    oracle: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.domain)

    def rows(self, start: int, stop: int) -> Encoded:
        """Rows ``start:stop`` (views of the arrays)."""

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[start:stop]

        return Encoded(
            self.sparse[start:stop],
            tuple(s[start:stop] for s in self.sequences),
            self.dense[start:stop],
            self.domain[start:stop],
            cut(self.labels),
            cut(self.user),
            cut(self.oracle),
        )


def _as_text(types: pl.Schema, name: str) -> pl.Expr:
    dtype = types[name]
    if isinstance(dtype, pl.List | pl.Array):
        return pl.col(name).cast(pl.List(pl.String))
    return pl.col(name).cast(pl.String)


def _sequence_items(types: pl.Schema, name: str, sep: str) -> pl.Expr:
    if types[name] == pl.String:
        return pl.col(name).str.split(sep)
    if types[name] == pl.Null:  # null in every row: empty sequences
        return pl.col(name).cast(pl.List(pl.String))
    return _as_text(types, name)


def _text(value: object) -> str | None:
    """A raw value as the text polars gives it when casting to String."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _is_int_text(text: str) -> bool:
    """Text that polars would produce from an integer (so the int itself may be looked up)."""
    body = text[1:] if text.startswith("-") else text
    return body.isascii() and body.isdigit() and str(int(text)) == text


OUTLIER = 1e4  # standardised values are clipped to +-OUTLIER: float32 stays finite whatever the scale


def _scaled(column: pl.Expr, log1p: bool) -> pl.Expr:
    """A numeric column as float64 with NaN and +-inf as null (missing), after
    ``log(1 + max(x, 0))`` if asked."""
    column = column.cast(pl.Float64)
    column = pl.when(column.is_finite()).then(column)
    return column.clip(lower_bound=0).log1p() if log1p else column


def _number(value: object) -> float:
    """A raw numeric value as float; None, NaN or +-inf -> NaN (later replaced by the mean)."""
    if value is None:
        return math.nan
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an integer beyond float's range
        return math.nan
    return number if math.isfinite(number) else math.nan


_SCALARS = frozenset({str, int, float, bool, type(None)})
_RECORD_TYPES = {  # the classes a scoring record's value may have, per kind (None: missing)
    "categorical": (_SCALARS, "an id (text or integer) or null"),
    "numeric": (frozenset({int, float, bool, type(None)}), "a number or null"),
    "sequence": (frozenset({str, list, tuple, type(None)}), "a list of ids, text or null"),
}


@dataclass
class Encoder:
    """Fitted vocabularies (by vocabulary name) and scalers; ``fit`` on train, ``transform``
    anything with the same columns."""

    schema: Schema
    vocabs: dict[str, list[str]] = field(default_factory=dict)
    scalers: dict[str, tuple[float, float]] = field(default_factory=dict)
    domains: list[str] = field(default_factory=list)

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.schema.categorical]

    @property
    def sequence(self) -> list[str]:
        return [f.name for f in self.schema.sequence]

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.schema.numeric]

    def vocab_size(self, name: str) -> int:
        """Rows an embedding table needs for feature ``name``: PAD, OOV and the kept values."""
        return len(self.vocabs[self.schema.feature(name).vocabulary]) + 2

    def input_spec(self) -> InputSpec:
        """Table sizes, sharing and lengths the model needs."""
        ids = [*self.schema.categorical, *self.schema.sequence]
        first = {}
        for i, f in enumerate(ids):
            first.setdefault(f.vocabulary, i)
        owner = tuple(first[f.vocabulary] for f in ids)
        return InputSpec(
            tuple(self.vocab_size(c) for c in self.categorical),
            tuple(self.vocab_size(c) for c in self.sequence),
            len(self.numeric),
            len(self.domains),
            len(self.schema.labels),
            owner if any(o != i for i, o in enumerate(owner)) else (),
            tuple(f.max_len for f in self.schema.sequence),
        )

    @classmethod
    def fit(
        cls,
        data: pl.DataFrame | pl.LazyFrame,
        schema: Schema,
        streaming: bool = False,
        where: str = "training data",
    ) -> Encoder:
        """Fit on a frame, or on a lazy frame (e.g. ``pl.scan_parquet``) in one pass; with
        ``streaming`` the pass runs on polars' streaming engine, in memory bounded by the number
        of distinct values rather than rows. A feature with no value to fit is an InputError
        naming ``where``."""
        enc = cls(schema)
        lazy = data.lazy()
        types = lazy.collect_schema()
        queries = []
        for users in schema.vocabularies().values():
            owner = users[0]
            parts = [
                lazy.select(_sequence_items(types, f.name, f.sep).alias("v")).explode("v")
                if f.kind == "sequence"
                else lazy.select(_as_text(types, f.name).alias("v"))
                for f in users
            ]
            values = parts[0] if len(parts) == 1 else pl.concat(parts)
            kept = (
                values.drop_nulls("v")
                .group_by("v")
                .len()
                .filter(pl.col("len") >= owner.min_count)
                .sort(["len", "v"], descending=[True, False])
            )
            queries.append(kept.head(owner.max_vocab) if owner.max_vocab is not None else kept)
        moments = [_scaled(pl.col(f.name), f.log1p) for f in schema.numeric]
        if moments:
            stats = [m.mean().alias(f"{i}:mean") for i, m in enumerate(moments)]
            queries.append(lazy.select(stats + [m.std().alias(f"{i}:std") for i, m in enumerate(moments)]))
        queries.append(lazy.select(domain_key(schema.domain).alias("d")).unique())
        engine = "streaming" if streaming else "auto"
        results = pl.collect_all(queries, engine=engine)  # the features in parallel
        vocabularies = list(schema.vocabularies())
        for name, kept in zip(vocabularies, results[: len(vocabularies)], strict=True):
            enc.vocabs[name] = kept["v"].to_list()
            if not enc.vocabs[name]:
                floor = schema.feature(name).min_count
                raise InputError(
                    f"{where}: feature {name!r} has no value in the training rows"
                    + (f" seen min_count={floor} times" if floor > 1 else " (it is null in every row)")
                    + "; fill it, lower min_count or drop it from data.features"
                )
        if moments:
            row = results[len(vocabularies)].row(0, named=True)
            for i, f in enumerate(schema.numeric):
                mean, std = row[f"{i}:mean"], row[f"{i}:std"]
                if mean is None:
                    raise InputError(
                        f"{where}: numeric feature {f.name!r} has no finite value in the training rows (null, NaN or "
                        f"inf in every row); fill it or drop it from data.features"
                    )
                enc.scalers[f.name] = (float(mean), float(std) if std else 1.0)
        enc.domains = sorted(results[-1]["d"].to_list())
        return enc

    def restricted(self, keep: dict[str, list[str]]) -> Encoder:
        """The same encoder with each listed categorical vocabulary cut to the kept values
        (the others map to OOV): retraining on a selected feature set."""
        unknown = sorted(set(keep) - set(self.categorical))
        if unknown:
            raise InputError(f"data.keep names {unknown}, which are not categorical features of this data")
        kept = {self.schema.feature(name).vocabulary: set(values) for name, values in keep.items()}
        vocabs = {
            name: [v for v in vocab if v in kept[name]] if name in kept else vocab
            for name, vocab in self.vocabs.items()
        }
        return Encoder(self.schema, vocabs, dict(self.scalers), list(self.domains))

    def extended(self, newer: Encoder) -> Encoder:
        """This encoder grown by what ``newer`` (fitted on new rows, same schema) has and it lacks:
        new values appended to each vocabulary (up to its ``max_vocab``; the rest stay OOV) and new
        domains after the old ones, so every old id and domain keeps its number. The numeric
        scalers stay this encoder's: the model was trained on inputs they scaled."""
        vocabs = {}
        for name, old in self.vocabs.items():
            known = set(old)
            added = [v for v in newer.vocabs[name] if v not in known]
            cap = self.schema.feature(name).max_vocab
            vocabs[name] = [*old, *(added if cap is None else added[: max(cap - len(old), 0)])]
        known_domains = set(self.domains)
        domains = [*self.domains, *(d for d in newer.domains if d not in known_domains)]
        return Encoder(self.schema, vocabs, dict(self.scalers), domains)

    def fits(self, other: Encoder) -> bool:
        """Whether ``other``'s model can grow into this encoding: the same schema and scalers, and
        one encoder's domains the other's first ones (its values may sit anywhere)."""
        short, long = sorted((self.domains, other.domains), key=len)
        return self.schema == other.schema and self.scalers == other.scalers and long[: len(short)] == short

    def _ids(self, name: str, expr: pl.Expr) -> pl.Expr:
        """Text of feature ``name`` -> id (position in its vocabulary + 2); unknown values and
        nulls become null, which the callers fill with OOV."""
        vocab = self.vocabs[self.schema.feature(name).vocabulary]
        return expr.cast(pl.Enum(vocab), strict=False).to_physical().cast(pl.Int64) + 2

    def transform(self, frame: pl.DataFrame, with_label: bool = True) -> Encoded:
        """Encode a checked table; unseen values map to OOV, unseen domains to D."""
        n, types, schema = frame.height, frame.schema, self.schema
        sparse = (
            frame.select([self._ids(c, _as_text(types, c)).fill_null(OOV).alias(c) for c in self.categorical])
            .to_numpy(order="c")  # the row-major layout training gathers from, built once
            .astype(np.int64, copy=False)
            if self.categorical
            else np.zeros((n, 0), np.int64)
        )
        sequences = tuple(self._sequence(frame, f.name, f.sep, f.max_len) for f in schema.sequence)
        dense = np.zeros((n, len(self.numeric)), np.float32)
        for j, f in enumerate(schema.numeric):
            mean, std = self.scalers[f.name]
            col = frame.select(_scaled(pl.col(f.name), f.log1p).fill_null(mean)).to_series()
            dense[:, j] = ((col - mean) / std).clip(-OUTLIER, OUTLIER).to_numpy()
        domain = (
            frame.select(
                domain_key(schema.domain).replace_strict(
                    self.domains, range(len(self.domains)), default=len(self.domains), return_dtype=pl.Int64
                )
            )
            .to_series()
            .to_numpy()
        )
        labels = (
            frame.select(pl.col(schema.labels).cast(pl.Float32)).to_numpy(order="c") if with_label else None
        )
        user = None
        if schema.user is not None and schema.user in frame.columns:
            # any id per distinct user will do (GAUC groups by it)
            user = frame.select(pl.col(schema.user).cast(pl.String).cast(pl.Categorical).to_physical())
            user = user.to_series().cast(pl.Int64).to_numpy()
        oracle = None
        if with_label and schema.oracle is not None and schema.oracle in frame.columns:
            oracle = frame[schema.oracle].cast(pl.Float64).to_numpy()
        return Encoded(sparse, sequences, dense, domain, labels, user, oracle)

    def _sequence(self, frame: pl.DataFrame, name: str, sep: str, max_len: int) -> np.ndarray:
        ids = frame.select(
            _sequence_items(frame.schema, name, sep)
            .list.head(max_len)
            .list.eval(self._ids(name, pl.element()).fill_null(OOV))
            .alias("ids")
        )
        positions = [
            pl.col("ids").list.get(i, null_on_oob=True).fill_null(PAD).alias(str(i)) for i in range(max_len)
        ]
        return ids.select(positions).to_numpy(order="c").astype(np.int64, copy=False)

    def encode_table(self, frame: pl.DataFrame, where: str, need_label: bool) -> Encoded:
        """Check a raw table against the run's columns and encode it."""
        check_table(frame, self.schema, where, need_label=need_label)
        return self.transform(frame, with_label=need_label)

    @cached_property
    def _lookups(self) -> dict[str, dict[object, int]]:
        """Value -> id per feature; keyed by the text and, for integer-like text, also by the int."""
        lookups: dict[str, dict[object, int]] = {}
        for name, vocab in self.vocabs.items():
            lookup: dict[object, int] = {v: i for i, v in enumerate(vocab, 2)}
            lookup.update({int(v): i for v, i in list(lookup.items()) if _is_int_text(v)})
            lookups[name] = lookup
        return lookups

    def _record_ids(self, name: str, values: list[object]) -> list[int]:
        """Ids of feature ``name``'s raw values as ``transform`` gives them (unknown or None -> OOV)."""
        lookup = self._lookups[self.schema.feature(name).vocabulary]
        ids = [lookup.get(v, 0) if v.__class__ is str or v.__class__ is int else 0 for v in values]
        for i, found in enumerate(ids):
            if not found:  # floats, booleans, None, unknown values: through their text
                ids[i] = lookup.get(_text(values[i]), OOV)  # type: ignore[arg-type]
        return ids

    def transform_records(self, records: Sequence[Mapping[str, object]], typed: bool = False) -> Encoded:
        """Encode raw rows given as mappings, without polars: the low-latency path for serving.

        Equal to ``transform`` on the same rows as a table; every feature and domain column
        must be a key (None = missing value), each value of a type its kind allows (checked
        unless ``typed``: the server's request model has checked them).
        """
        n, schema = len(records), self.schema
        need = [*schema.domain, *(f.name for f in schema.features)]
        for i, record in enumerate(records):
            if not all(c in record for c in need):
                missing = next(c for c in need if c not in record)
                raise InputError(f"row {i}: feature {missing!r} is missing; every row needs {need}")
        if not typed:
            self._check_record_types(records)
        sparse = np.empty((n, len(self.categorical)), np.int64)
        for j, c in enumerate(self.categorical):
            sparse[:, j] = self._record_ids(c, [r[c] for r in records])
        sequences = tuple(self._sequence_records(records, f.name, f.sep, f.max_len) for f in schema.sequence)
        dense = np.zeros((n, len(self.numeric)), np.float32)
        for j, f in enumerate(schema.numeric):
            mean, std = self.scalers[f.name]
            values = np.array([_number(r[f.name]) for r in records], np.float64)
            if f.log1p:
                values = np.log1p(np.clip(values, 0, None))
            dense[:, j] = np.clip((np.where(np.isnan(values), mean, values) - mean) / std, -OUTLIER, OUTLIER)
        index = {d: i for i, d in enumerate(self.domains)}
        columns = schema.domain
        keys = (
            [_text(r[columns[0]]) or "<null>" for r in records]
            if len(columns) == 1
            else ["|".join(_text(r[c]) or "<null>" for c in columns) for r in records]
        )
        domain = np.array([index.get(k, len(self.domains)) for k in keys], np.int64)
        return Encoded(sparse, sequences, dense, domain, None)

    def _check_record_types(self, records: Sequence[Mapping[str, object]]) -> None:
        """Numeric values are numbers, ids scalars, sequences lists of scalars or text (or null)."""
        kinds = {c: "categorical" for c in self.schema.domain} | {
            f.name: f.kind for f in self.schema.features
        }
        for name, kind in kinds.items():
            allowed, expected = _RECORD_TYPES[kind]
            column = [r[name] for r in records]
            if not {v.__class__ for v in column} <= allowed:
                i = next(i for i, v in enumerate(column) if v.__class__ not in allowed)
                raise InputError(
                    f"row {i}: {kind} feature {name!r} must be {expected}, got {type(column[i]).__name__}"
                )
            lists = [(i, v) for i, v in enumerate(column) if v.__class__ in (list, tuple)]
            if lists and not {x.__class__ for _, v in lists for x in v} <= _SCALARS:  # type: ignore[union-attr]
                i, item = next((i, x) for i, v in lists for x in v if x.__class__ not in _SCALARS)  # type: ignore[union-attr]
                raise InputError(
                    f"row {i}: sequence feature {name!r} holds a {type(item).__name__}; "
                    f"give a list of ids or text joined by {self.schema.feature(name).sep!r}"
                )

    def _sequence_records(
        self, records: Sequence[Mapping[str, object]], name: str, sep: str, max_len: int
    ) -> np.ndarray:
        out = np.full((len(records), max_len), PAD, np.int64)
        counts, items = [], []
        for record in records:
            value = record[name]
            kept = (value.split(sep) if isinstance(value, str) else list(value or ()))[:max_len]
            counts.append(len(kept))
            items.extend(kept)
        lengths = np.array(counts, np.int64)
        row = np.repeat(np.arange(len(records)), lengths)
        col = np.arange(len(items)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[row, col] = self._record_ids(name, items)
        return out

    def to_dict(self) -> dict:
        return {
            "schema": self.schema.to_dict(),
            "vocabs": self.vocabs,
            "scalers": {k: list(v) for k, v in self.scalers.items()},
            "domains": self.domains,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Encoder:
        if "roles" in data:  # a run written before the schema: one label, no shared vocabularies
            roles = data["roles"]
            schema = Schema(
                features=roles["features"],
                domain=roles["domain"],
                labels=(roles["label"],),
                user=roles["user"],
            )
        else:
            schema = Schema.from_dict(data["schema"])
        return cls(
            schema,
            data["vocabs"],
            {k: (v[0], v[1]) for k, v in data["scalers"].items()},
            data["domains"],
        )

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> Encoder:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(
                f"{path}: cannot read the vocabularies ({type(err).__name__}); "
                f"the run directory is damaged, retrain it"
            ) from None
