"""User tables: read parquet/CSV, check every declared column, split into train/valid/test."""

from __future__ import annotations

import difflib
import glob
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import ValidationError

from mdctr.config import DataConfig
from mdctr.data.schema import Schema
from mdctr.errors import InputError


def schema_of(cfg: DataConfig) -> Schema:
    """The schema an experiment's data section declares (a task's, narrowed by ``features``)."""
    if cfg.task is not None:
        from mdctr.data.tasks import TASKS

        task = TASKS[cfg.task].schema
        update = {"features": cfg.features or task.features, "user": cfg.user or task.user}
        return task.model_copy(update={**update, "oracle": cfg.oracle or task.oracle})
    assert cfg.label is not None and cfg.domain is not None
    try:
        return Schema(
            features=cfg.features,
            domain=(cfg.domain,) if isinstance(cfg.domain, str) else tuple(cfg.domain),
            labels=(cfg.label,) if isinstance(cfg.label, str) else tuple(cfg.label),
            user=cfg.user,
            oracle=cfg.oracle,
        )
    except ValidationError as err:
        raise InputError(f"data: {err.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def _is_glob(path: str | Path) -> bool:
    return any(c in str(path) for c in "*?[")


def parquet_files(path: str | Path) -> list[Path]:
    """The parquet files a path names: one file, every ``*.parquet`` in a folder, or a glob."""
    text = str(path)
    if _is_glob(text):
        files = sorted(Path(p) for p in glob.glob(text))
    elif Path(text).is_dir():
        files = sorted(Path(text).glob("*.parquet"))
    else:
        files = [Path(text)] if Path(text).is_file() else []
    if not files:
        raise InputError(f"{path}: no parquet file found; give a .parquet file, a folder of them or a glob")
    return files


def read_table(path: str | Path, text_columns: Iterable[str] = ()) -> pl.DataFrame:
    """Read a parquet or CSV file (or a folder or glob of parquet files); a missing, unreadable
    or empty file is an InputError.

    ``text_columns`` (those present) are read from CSV as text rather than inferred, so ids such
    as "07030" or "55405-2546" keep their value whatever the first rows look like.
    """
    many = Path(path).is_dir() or _is_glob(path)
    files = parquet_files(path) if many else [Path(path)]
    if not files[0].is_file():
        raise InputError(f"data file {path} not found; check the path")
    suffix = files[0].suffix.lower()
    try:
        if many or suffix in (".parquet", ".pq"):
            frame = pl.read_parquet(files)
        elif suffix in (".csv", ".tsv", ".txt"):
            frame = pl.read_csv(
                path,
                separator="\t" if suffix == ".tsv" else ",",
                infer_schema_length=10000,
                schema_overrides=dict.fromkeys(text_columns, pl.String),
            )
        else:
            raise InputError(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")
    except (pl.exceptions.PolarsError, OSError) as err:
        if isinstance(err, pl.exceptions.NoDataError):
            raise InputError(f"{path} is empty; give a file with a header and at least one row") from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        kind = "parquet" if many else suffix[1:]
        raise InputError(f"{path}: cannot read it ({first}); check that it is valid {kind}") from None
    if frame.height == 0:
        raise InputError(f"{path} has no rows; give a file with at least one row")
    return frame


def _need_column(types: pl.Schema, name: str, role: str, where: str) -> pl.DataType:
    if name in types:
        return types[name]
    close = difflib.get_close_matches(name, list(types), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"available: {', '.join(list(types)[:12])}"
    raise InputError(f"{where}: column {name!r} ({role}) not found; {hint}")


def _is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() or dtype == pl.Boolean


def check_label(series: pl.Series, where: str) -> None:
    """The label must be numeric 0/1 with no missing values."""
    name = series.name
    if not _is_numeric(series.dtype):
        raise InputError(f"{where}: label column {name!r} must be numeric 0/1, found {series.dtype}")
    values = series.cast(pl.Float64)
    bad = values.is_null() | values.is_nan()
    if bad.any():
        first = int(bad.arg_true()[0])
        raise InputError(
            f"{where}: label column {name!r} has {int(bad.sum())} missing/NaN values "
            f"(first at row {first}); drop or fill those rows"
        )
    wrong = ~values.is_in([0.0, 1.0])
    if wrong.any():
        shown = ", ".join(str(v) for v in values.filter(wrong).unique().sort().head(5).to_list())
        raise InputError(
            f"{where}: label column {name!r} must be 0/1, found {shown}; binarise it (e.g. rating >= 4)"
        )


def check_columns(types: pl.Schema, schema: Schema, where: str, need_label: bool = True) -> None:
    """Every declared column exists with a usable type (read from a table's column types alone)."""
    labels = schema.labels if need_label else ()
    for label in labels:
        if not _is_numeric(_need_column(types, label, "label", where)):
            raise InputError(f"{where}: label column {label!r} must be numeric 0/1, found {types[label]}")
    oracle = schema.oracle
    if need_label and oracle is not None and oracle in types and not _is_numeric(types[oracle]):
        raise InputError(f"{where}: oracle column {oracle!r} must hold probabilities, found {types[oracle]}")
    for name in schema.domain:
        dtype = _need_column(types, name, "domain", where)
        if isinstance(dtype, pl.List | pl.Array | pl.Struct):
            raise InputError(f"{where}: domain column {name!r} holds {dtype}; it must be a scalar column")
    if schema.user is not None:
        _need_column(types, schema.user, "user", where)
    for feat in schema.features:
        dtype = _need_column(types, feat.name, feat.kind, where)
        nested = isinstance(dtype, pl.List | pl.Array)
        if feat.kind == "numeric" and not _is_numeric(dtype):
            raise InputError(
                f"{where}: column {feat.name!r} is declared numeric but holds {dtype}; "
                f"cast it to numbers or declare it kind: categorical"
            )
        if feat.kind == "categorical" and (nested or isinstance(dtype, pl.Struct)):
            raise InputError(f"{where}: column {feat.name!r} holds {dtype}; declare it kind: sequence")
        if feat.kind == "sequence" and not (nested or dtype == pl.String):
            raise InputError(
                f"{where}: column {feat.name!r} is declared sequence but holds {dtype}; "
                f"give a list column or text joined by {feat.sep!r}"
            )


def check_table(frame: pl.DataFrame, schema: Schema, where: str, need_label: bool = True) -> None:
    """Every declared column exists with a usable type; the labels are clean 0/1."""
    if frame.height == 0:
        raise InputError(f"{where} has no rows; give at least one row")
    check_columns(frame.schema, schema, where, need_label)
    for label in schema.labels if need_label else ():
        check_label(frame[label], where)


def domain_key(columns: tuple[str, ...]) -> pl.Expr:
    """The domain of each row as text (several domain columns joined by '|', null as '<null>')."""
    parts = [pl.col(c).cast(pl.String).fill_null("<null>") for c in columns]
    return parts[0] if len(parts) == 1 else pl.concat_str(parts, separator="|")


def split(
    frame: pl.DataFrame, schema: Schema, valid: float, test: float, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Random train/valid/test split stratified by the main label within each domain."""
    group = pl.struct(domain_key(schema.domain), pl.col(schema.label).cast(pl.Int8)).rank("dense")
    groups = frame.select(group)[:, 0].to_numpy()
    order = np.random.default_rng(seed).permutation(frame.height)
    order = order[np.argsort(groups[order], kind="stable")]
    sorted_groups = groups[order]
    starts = np.searchsorted(sorted_groups, sorted_groups, side="left")
    sizes = np.bincount(sorted_groups)[sorted_groups]
    position = np.arange(frame.height) - starts
    n_train = np.round(sizes * (1 - valid - test))
    n_valid = np.round(sizes * valid)
    part = np.where(position < n_train, 0, np.where(position < n_train + n_valid, 1, 2))
    return tuple(frame[np.sort(order[part == k])] for k in range(3))  # type: ignore[return-value]


@dataclass(frozen=True)
class Prepared:
    """Checked tables for one experiment, split."""

    schema: Schema
    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame


def prepare(cfg: DataConfig) -> Prepared:
    """Load the task or the user's table(s), check them and split them."""
    schema = schema_of(cfg)
    if cfg.task is not None:
        from mdctr.data.tasks import TASKS

        frames = [TASKS[cfg.task].load(cfg.rows)]
        names = [cfg.task]
    else:
        names = [p for p in (cfg.path, cfg.valid_path, cfg.test_path) if p is not None]
        frames = [read_table(p, schema.id_columns) for p in names]
    for frame, name in zip(frames, names, strict=True):
        check_table(frame, schema, str(name))
    if len(frames) == 3:
        return Prepared(schema, *frames)
    train, valid, test = split(frames[0], schema, cfg.split.valid, cfg.split.test, cfg.split.seed)
    return Prepared(schema, train, valid, test)
