"""User tables: read parquet/CSV, check every declared column, split into train/valid/test."""

from __future__ import annotations

import csv
import difflib
import glob
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mdctr.config import DataConfig
from mdctr.data.schema import Schema
from mdctr.errors import InputError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


def schema_of(cfg: DataConfig) -> Schema:
    """The schema an experiment's data section declares (a task's, narrowed by ``features``)."""
    if cfg.task is not None:
        from mdctr.data.tasks import TASKS

        task = TASKS[cfg.task].schema
        update = {"features": cfg.features or task.features, "user": cfg.user or task.user}
        return task.model_copy(update={**update, "oracle": cfg.oracle or task.oracle})
    return cfg.schema()


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


def _csv_header(path: Path, separator: str) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        return next(csv.reader(handle, delimiter=separator), [])


def _check_header(path: Path, separator: str) -> None:
    """A column named twice in a CSV header is an InputError (polars would rename the copy)."""
    names = _csv_header(path, separator)
    seen: dict[str, int] = {}
    for position, name in enumerate(names, 1):
        if name and name in seen:
            raise InputError(
                f"{path}: the header names column {name!r} twice (columns {seen[name]} and {position}); "
                f"rename or drop one"
            )
        seen.setdefault(name, position)


def _ragged_line(path: Path, separator: str) -> str:
    """Where a CSV row has more fields than its header (for the error message)."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        rows = csv.reader(handle, delimiter=separator)
        width = len(next(rows, []))
        for row in rows:
            if len(row) > width:
                return f"line {rows.line_num} has {len(row)} fields, the header {width}"
    return "a row has more fields than the header"


def _read_error(path: str | Path, err: Exception, kind: str, separator: str) -> InputError:
    """The one-line InputError for a file polars or the OS could not read."""
    text = str(err).strip()
    if isinstance(err, pl.exceptions.NoDataError):
        return InputError(f"{path} is empty; give a file with a header and at least one row")
    if isinstance(err, pl.exceptions.DuplicateError):
        return InputError(f"{path}: {text.splitlines()[0]}; rename or drop the repeated column")
    if kind == "csv" and "invalid utf-8" in text:
        return InputError(f"{path} is not UTF-8 text; save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    if kind == "csv" and "more fields than" in text:
        where = _ragged_line(Path(path), separator)
        return InputError(f"{path}: {where}; quote values that contain {separator!r} or fix the row")
    first = text.splitlines()[0] if text else type(err).__name__
    return InputError(f"{path}: cannot read it ({first}); check that it is valid {kind}")


def read_table(path: str | Path, text_columns: Iterable[str] = ()) -> pl.DataFrame:
    """Read a parquet or CSV file (or a folder or glob of parquet files); a missing, unreadable
    or empty file, or a CSV header that names a column twice, is an InputError.

    ``text_columns`` (those present) are read from CSV as text rather than inferred, so ids such
    as "07030" or "55405-2546" keep their value whatever the first rows look like. CSV files may
    start with a UTF-8 byte-order mark and end lines with CRLF.
    """
    many = Path(path).is_dir() or _is_glob(path)
    files = parquet_files(path) if many else [Path(path)]
    if not files[0].is_file():
        raise InputError(f"data file {path} not found; check the path")
    suffix = files[0].suffix.lower()
    kind = "parquet" if many or suffix in (".parquet", ".pq") else suffix[1:]
    separator = "\t" if suffix == ".tsv" else ","
    try:
        if kind == "parquet":
            frame = pl.read_parquet(files)
        elif suffix in (".csv", ".tsv", ".txt"):
            _check_header(Path(path), separator)
            frame = pl.read_csv(
                path,
                separator=separator,
                infer_schema_length=10000,
                schema_overrides=dict.fromkeys(text_columns, pl.String),
            )
        else:
            raise InputError(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")
    except (pl.exceptions.PolarsError, OSError) as err:
        raise _read_error(path, err, kind, separator) from None
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
    return dtype.is_numeric() or dtype in (pl.Boolean, pl.Null)


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
        if feat.kind == "sequence" and not (nested or dtype in (pl.String, pl.Null)):
            raise InputError(
                f"{where}: column {feat.name!r} is declared sequence but holds {dtype}; "
                f"give a list column or text joined by {feat.sep!r}"
            )


def _not_a_number(frame: pl.DataFrame, name: str, where: str) -> None:
    """A text column declared numeric: name the first value that is not a number (text such as
    "nan", "inf" or an integer beyond 64 bits is one)."""
    bad = frame[name].cast(pl.Float64, strict=False).is_null() & frame[name].is_not_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        raise InputError(
            f"{where}: column {name!r} is declared numeric but row {row} holds {frame[name][row]!r:.40}; "
            f"fix the value or declare it kind: categorical"
        )


def check_table(frame: pl.DataFrame, schema: Schema, where: str, need_label: bool = True) -> None:
    """Every declared column exists with a usable type; the labels are clean 0/1.

    A column that is null in every row has no type of its own (a CSV reader calls it text): it
    passes as missing values of any kind.
    """
    if frame.height == 0:
        raise InputError(f"{where} has no rows; give at least one row")
    types = pl.Schema(
        {c: pl.Null if frame[c].null_count() == frame.height else t for c, t in frame.schema.items()}
    )
    for feat in schema.numeric:
        if types.get(feat.name) == pl.String:
            _not_a_number(frame, feat.name, where)
            types[feat.name] = pl.Float64  # every value reads as a number
    check_columns(types, schema, where, need_label)
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


def label_bounds(frame: pl.DataFrame | pl.LazyFrame, schema: Schema) -> pl.LazyFrame:
    """Each label's smallest and largest value (columns ``<label>:min``, ``<label>:max``)."""
    return frame.lazy().select(
        *(pl.col(c).cast(pl.Float64).min().alias(f"{c}:min") for c in schema.labels),
        *(pl.col(c).cast(pl.Float64).max().alias(f"{c}:max") for c in schema.labels),
    )


def check_classes(bounds: pl.DataFrame, schema: Schema, split_name: str, where: str) -> None:
    """A training split needs both classes of every label, a validation split those of the main
    label (early stopping ranks epochs by its AUC); ``bounds`` is ``label_bounds`` collected."""
    for label in schema.labels if split_name == "train" else schema.labels[:1]:
        low, high = bounds[f"{label}:min"][0], bounds[f"{label}:max"][0]
        if low == high:
            role = "a click model learns" if split_name == "train" else "early stopping ranks epochs"
            noun = "training" if split_name == "train" else "validation"
            raise InputError(
                f"{where}: label column {label!r} is {int(low)} in every {noun} row; "
                f"{role} from both 0 and 1 labels: give rows of both"
            )


def _check_split(parts: tuple[pl.DataFrame, ...], schema: Schema, cfg: DataConfig, where: str) -> None:
    rows = sum(p.height for p in parts)
    for name, part in zip(SPLITS, parts, strict=True):
        if part.height == 0:
            raise InputError(
                f"{where}: {rows} rows are too few to split (data.split valid={cfg.split.valid}, "
                f"test={cfg.split.test}, stratified by label and domain): the {name} split is empty; "
                f"give more rows, or your own data.valid_path and data.test_path"
            )
    train, valid, test = (set(p.select(domain_key(schema.domain)).to_series().unique()) for p in parts)
    for domain in sorted(train - (valid & test)):
        log.warning("domain %r has too few rows to reach every split: it lacks valid or test rows", domain)


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
    check_classes(label_bounds(frames[0], schema).collect(), schema, "train", str(names[0]))
    if len(frames) == 3:
        check_classes(label_bounds(frames[1], schema).collect(), schema, "valid", str(names[1]))
        return Prepared(schema, *frames)
    parts = split(frames[0], schema, cfg.split.valid, cfg.split.test, cfg.split.seed)
    _check_split(parts, schema, cfg, str(names[0]))
    check_classes(label_bounds(parts[1], schema).collect(), schema, "valid", str(names[0]))
    return Prepared(schema, *parts)
