"""A log with a time column cut into consecutive periods (equal row counts, or calendar
windows such as days or weeks), for daily updates and the replay protocol: every period's
events come strictly after the previous period's (equal times never straddle a cut)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from mdctr.data.cache import atomic_write, make_dir
from mdctr.errors import InputError


@dataclass(frozen=True)
class Period:
    """One period's file, its rows and its first and last time (as the column holds them)."""

    index: int
    path: str
    rows: int
    start: str
    end: str


def _as_datetime(frame: pl.DataFrame, time: str, where: str) -> pl.Expr:
    """The time column as a datetime: integers are Unix seconds, dates and datetimes as they are."""
    if time not in frame.columns:
        raise InputError(f"{where}: no column {time!r}; --time names the column that holds each event's time")
    dtype = frame.schema[time]
    if dtype.is_integer():
        return pl.from_epoch(pl.col(time), time_unit="s")
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        return pl.col(time).cast(pl.Datetime)
    raise InputError(
        f"{where}: column {time!r} is {dtype}; it must hold Unix seconds (integers), dates or datetimes"
    )


def assign(
    frame: pl.DataFrame, time: str, periods: int | None = None, every: str | None = None, where: str = "table"
) -> pl.Series:
    """Each row's period number (0 = earliest): ``periods`` cuts at time quantiles (about equal
    row counts), ``every`` (a polars duration: ``1d``, ``1w``, ``1mo``) at calendar boundaries.
    Periods that would be empty are skipped, so the numbers are consecutive."""
    if (periods is None) == (every is None):
        raise InputError("give one of --periods (equal row counts) or --every (a duration such as 1d or 1w)")
    if frame.height == 0:
        raise InputError(f"{where}: the table is empty; there is nothing to cut into periods")
    moment = _as_datetime(frame, time, where)
    if frame.select(pl.col(time).null_count()).item():
        raise InputError(f"{where}: column {time!r} has missing times; fill or drop those rows")
    if periods is not None:
        if periods < 2:
            raise InputError(f"--periods {periods}: give at least 2")
        ranks = frame.select(pl.col(time).rank("min") - 1).to_series()  # ties share the lowest rank
        raw = (ranks * periods // frame.height).alias("period")
    else:
        try:
            raw = frame.select(moment.dt.truncate(every).alias("period")).to_series()
        except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError):
            raise InputError(f"--every {every!r} is not a duration; use e.g. 1d, 1w or 1mo") from None
    return raw.rank("dense").cast(pl.Int64) - 1


def cut(
    frame: pl.DataFrame,
    time: str,
    out: str | Path,
    periods: int | None = None,
    every: str | None = None,
    where: str = "table",
) -> list[Period]:
    """Write each period of ``frame`` to ``out/period-NNN.parquet`` in time order; its summary."""
    number = assign(frame, time, periods, every, where)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} already holds files; choose an empty --out")
    make_dir(out)
    moment = _as_datetime(frame, time, where)
    table = frame.with_columns(number.alias("__period"), moment.alias("__time")).sort(
        "__time", maintain_order=True
    )
    written = []
    for (index,), part in table.group_by("__period", maintain_order=True):
        path = out / f"period-{int(index):03d}.parquet"
        rows = part.drop("__period", "__time")
        atomic_write(path, lambda tmp, rows=rows: rows.write_parquet(tmp))
        first, last = part["__time"].min(), part["__time"].max()
        written.append(Period(int(index), str(path), part.height, str(first), str(last)))
    return written


def summary(periods: list[Period]) -> list[dict]:
    return [asdict(p) for p in periods]
