"""Cutting a log into consecutive periods: strictly ordered, ties never split, bad input in one line."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from mdctr.cli import app
from mdctr.data.periods import assign, cut
from mdctr.errors import InputError

runner = CliRunner()


def log(rows: int = 1000, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    seconds = 1_000_000_000 + rng.integers(0, 30 * 86400, rows) // 600 * 600  # many equal times
    return pl.DataFrame({"t": seconds, "x": rng.integers(0, 5, rows), "y": rng.integers(0, 2, rows)})


def test_equal_row_periods_are_consecutive_in_time_and_never_split_a_tie(tmp_path: Path) -> None:
    frame = log()
    written = cut(frame, "t", tmp_path / "p", periods=8)
    assert len(written) == 8 and sum(p.rows for p in written) == frame.height
    parts = [pl.read_parquet(p.path) for p in written]
    for earlier, later in zip(parts, parts[1:], strict=False):
        assert earlier["t"].max() < later["t"].min()
    assert max(p.rows for p in written) - min(p.rows for p in written) < 60  # about equal
    assert pl.concat(parts).sort(["t", "x", "y"]).equals(frame.sort(["t", "x", "y"]))


def test_calendar_periods_follow_the_days() -> None:
    frame = pl.DataFrame({"day": [date(2026, 1, 3), date(2026, 1, 1), date(2026, 1, 3), date(2026, 1, 7)]})
    assert assign(frame, "day", every="1d").to_list() == [1, 0, 1, 2]  # empty days skipped
    assert assign(frame, "day", every="1w").n_unique() == 2


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (log(), {"periods": 4, "every": "1d"}, "give one of --periods"),
        (log(), {}, "give one of --periods"),
        (log().drop("t"), {"periods": 4}, "no column 't'"),
        (log().with_columns(pl.col("t").cast(pl.String)), {"periods": 4}, "column 't' is String"),
        (
            log().with_columns(pl.when(pl.col("x") == 0).then(None).otherwise(pl.col("t")).alias("t")),
            {"periods": 4},
            "missing times",
        ),
        (log(), {"every": "soon"}, "--every 'soon' is not a duration"),
        (log()[:0], {"periods": 4}, "the table is empty"),
    ],
)
def test_bad_periods_input_is_one_clear_error(frame: pl.DataFrame, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        assign(frame, "t", where="log.parquet", **kwargs)


def test_the_cli_writes_the_periods_and_their_summary(tmp_path: Path) -> None:
    log().write_parquet(tmp_path / "log.parquet")
    args = [
        "data",
        "periods",
        str(tmp_path / "log.parquet"),
        "--time",
        "t",
        "--periods",
        "3",
        "--out",
        str(tmp_path / "p"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "p" / "periods.json").read_text())
    assert [p["index"] for p in summary] == [0, 1, 2] and sum(p["rows"] for p in summary) == 1000
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already holds files" in again.output
