"""Hostile tables against every command that reads one: `train`, `features rank`, `adapt`,
`evaluate --data` and `predict`. Each case either succeeds in a documented way or stops with one
line naming the file, the column and the fix, exit code 2, and nothing written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from mdctr.cli import app

from .conftest import click_table, table_config

runner = CliRunner()
OK = None  # the command succeeds
SAME = "same"  # the command's outcome is the case's ``error``
Writer = Callable[[pl.DataFrame, Path], Path]


def _csv_text(table: pl.DataFrame) -> str:
    return table.with_columns(pl.col("tags").list.join("|")).write_csv()


def csv(change: Callable[[pl.DataFrame], pl.DataFrame] = lambda t: t) -> Writer:
    def write(table: pl.DataFrame, folder: Path) -> Path:
        path = folder / "table.csv"
        path.write_text(_csv_text(change(table)))
        return path

    return write


def parquet(change: Callable[[pl.DataFrame], pl.DataFrame]) -> Writer:
    def write(table: pl.DataFrame, folder: Path) -> Path:
        path = folder / "table.parquet"
        change(table).write_parquet(path)
        return path

    return write


def text(edit: Callable[[str], str], name: str = "table.csv", encoding: str = "utf-8") -> Writer:
    def write(table: pl.DataFrame, folder: Path) -> Path:
        path = folder / name
        path.write_bytes(edit(_csv_text(table)).encode(encoding))
        return path

    return write


def raw(data: Callable[[pl.DataFrame], bytes], name: str) -> Writer:
    def write(table: pl.DataFrame, folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data(table))
        return path

    return write


def where_row(predicate: pl.Expr, value: object, column: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda t: t.with_columns(pl.when(predicate).then(value).otherwise(pl.col(column)).alias(column))


def _lines(edit: Callable[[list[str]], list[str]]) -> Callable[[str], str]:
    return lambda body: "\n".join(edit(body.splitlines())) + "\n"


def _parquet_bytes(table: pl.DataFrame) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    table.write_parquet(buffer)
    return buffer.getvalue()


row = pl.int_range(pl.len())


@dataclass(frozen=True)
class Case:
    """How a table is damaged, and what each command then does: ``error`` (a message prefix with
    ``{path}``, or OK) for all of them unless a command's own field says otherwise (`features
    rank` and `adapt` follow ``train`` unless theirs does)."""

    write: Writer
    error: str | None
    train: str | None = SAME
    rank: str | None = SAME
    adapt: str | None = SAME
    evaluate: str | None = SAME
    predict: str | None = SAME

    def outcome(self, command: str) -> str | None:
        chosen = getattr(self, command)
        if chosen == SAME and command in ("rank", "adapt"):
            chosen = self.train
        return self.error if chosen == SAME else chosen


TOO_SMALL = "{path}: 2 rows are too few to split"
ONE_CLASS = "{path}: label column 'click' is 0 in every training row"
CASES = {
    "two rows": Case(
        text(
            _lines(
                lambda ls: [
                    ls[0],
                    next(x for x in ls if x.endswith(",0")),
                    next(x for x in ls if x.endswith(",1")),
                ]
            )
        ),
        OK,
        train=TOO_SMALL,
        adapt="{path}: need at least 10 rows of domain 'dnew'; found 2",
    ),
    "a domain of one row": Case(
        parquet(
            lambda t: pl.concat(
                [t.filter(pl.col("scene") != "d2"), t.filter(pl.col("scene") == "d2").head(1)]
            )
        ),
        OK,
    ),
    "a domain of one class": Case(csv(where_row(pl.col("scene") == "d2", 0, "click")), OK),
    "all one class": Case(
        csv(lambda t: t.with_columns(pl.lit(0).alias("click"))),
        OK,
        train=ONE_CLASS,
        adapt="{path} (domain 'dnew'): label column 'click' is 0 in every training row",
    ),
    "a column named twice": Case(
        text(_lines(lambda ls: [ls[0] + ",click", *(x + ",0" for x in ls[1:])])),
        "{path}: the header names column 'click' twice (columns 7 and 8); rename or drop one",
    ),
    "an empty column name": Case(text(_lines(lambda ls: [ls[0] + ",", *(x + ",x" for x in ls[1:])])), OK),
    "a pandas index column": Case(
        text(_lines(lambda ls: ["," + ls[0], *(f"{i}," + x for i, x in enumerate(ls[1:]))])), OK
    ),
    "UTF-8 BOM": Case(text(lambda body: "\ufeff" + body), OK),
    "CRLF line ends": Case(text(lambda body: body.replace("\n", "\r\n")), OK),
    "quoted separators": Case(
        csv(lambda t: t.with_columns(pl.format("{}, inc", "category").alias("category"))), OK
    ),
    "not UTF-8": Case(
        text(_lines(lambda ls: [ls[0], "São" + ls[1], *ls[2:]]), encoding="latin-1"),
        "{path} is not UTF-8 text; save it as UTF-8",
    ),
    "a row too long": Case(
        text(_lines(lambda ls: [*ls[:10], ls[10] + ",extra,more", *ls[11:]])),
        "{path}: line 11 has 9 fields, the header 7; quote values that contain ',' or fix the row",
    ),
    "a row too short": Case(
        text(_lines(lambda ls: [*ls[:10], ",".join(ls[10].split(",")[:3]), *ls[11:]])),
        "{path}: label column 'click' has 1 missing/NaN values (first at row 9)",
        predict=OK,
    ),
    "labels as words": Case(
        csv(lambda t: t.with_columns(pl.col("click").replace_strict({0: "no", 1: "yes"}))),
        "{path}: label column 'click' must be numeric 0/1, found String",
        predict=OK,
    ),
    "a label of 0.5": Case(
        csv(where_row(row == 5, 0.5, "click")),
        "{path}: label column 'click' must be 0/1, found 0.5; binarise it",
        predict=OK,
    ),
    "labels as booleans": Case(csv(lambda t: t.with_columns(pl.col("click") == 1)), OK),
    "NaN in a numeric column": Case(parquet(where_row(row % 7 == 0, float("nan"), "price")), OK),
    "inf in a numeric column": Case(csv(where_row(row % 7 == 0, float("inf"), "price")), OK),
    "a numeric column entirely null": Case(
        csv(lambda t: t.with_columns(pl.lit(None, pl.Float64).alias("price"))),
        OK,
        train="{path}: numeric feature 'price' has no finite value in the training rows",
        rank=OK,
        adapt=OK,
    ),
    "a categorical column entirely null": Case(
        parquet(lambda t: t.with_columns(pl.lit(None, pl.Null).alias("category"))),
        OK,
        train="{path}: feature 'category' has no value in the training rows (it is null in every row)",
        rank=OK,
        adapt=OK,
    ),
    "a sequence column entirely null": Case(
        parquet(lambda t: t.with_columns(pl.lit(None, pl.Null).alias("tags"))),
        OK,
        train="{path}: feature 'tags' has no value in the training rows (it is null in every row)",
        rank=OK,
        adapt=OK,
    ),
    "text in a numeric column": Case(
        csv(
            lambda t: t.with_columns(
                pl.when(row == 300)
                .then(pl.lit("abc"))
                .otherwise(pl.col("price").cast(pl.String))
                .alias("price")
            )
        ),
        "{path}: column 'price' is declared numeric but row 300 holds 'abc'",
    ),
    "mixed types in a categorical column": Case(
        csv(
            lambda t: t.with_columns(
                pl.when(row % 2 == 0)
                .then(pl.lit("abc"))
                .otherwise(pl.col("item").cast(pl.String))
                .alias("item")
            )
        ),
        OK,
    ),
    "a 10 MB string in one cell": Case(
        parquet(
            lambda t: t.with_columns(
                pl.when(row == 3)
                .then(pl.lit("x" * 10_000_000))
                .otherwise(pl.col("category").cast(pl.String))
                .alias("category")
            )
        ),
        OK,
    ),
    "null lists": Case(parquet(where_row(row % 3 == 0, None, "tags")), OK),
    "a null domain": Case(csv(where_row(row % 5 == 0, None, "scene")), OK),
    "a truncated parquet file": Case(
        raw(lambda t: _parquet_bytes(t)[:3000], "table.parquet"),
        "{path}: cannot read it (parquet: File out of specification",
    ),
    "CSV named .parquet": Case(
        raw(lambda t: _csv_text(t).encode(), "table.parquet"),
        "{path}: cannot read it (parquet: File out of specification",
    ),
    "an empty file": Case(raw(lambda t: b"", "table.csv"), "{path} is empty; give a file with a header"),
    "a header and no rows": Case(
        raw(lambda t: _csv_text(t.head(0)).encode(), "table.csv"), "{path} has no rows"
    ),
}


def invoke(command: str, path: Path, tmp: Path, run: Path) -> tuple[list[str], Path]:
    """The command's arguments for table ``path``, and what it would write."""
    if command in ("train", "rank"):
        tree = table_config(path, epochs=1)
        config = tmp / "exp.yaml"
        config.write_text(yaml.safe_dump(tree))
        if command == "train":
            return ["train", str(config), "--out", str(tmp / "run"), "--quiet"], tmp / "run"
        target = tmp / "ranking.json"
        return ["features", "rank", str(config), "--out", str(target), "--permutations", "1"], target
    if command == "adapt":
        return [
            "adapt",
            str(run),
            "--domain",
            "dnew",
            "--data",
            str(path),
            "--out",
            str(tmp / "run"),
        ], tmp / "run"
    if command == "evaluate":
        target = tmp / "metrics.json"
        return ["evaluate", str(run), "--data", str(path), "--out", str(target)], target
    target = tmp / "scores.parquet"
    return ["predict", str(run), str(path), "--out", str(target)], target


def check_success(command: str, written: Path) -> None:
    assert written.exists(), command
    if command == "predict":
        scores = pl.read_parquet(written)["score"].to_numpy()
        assert np.isfinite(scores).all() and ((scores > 0) & (scores < 1)).all()
    if command in ("train", "adapt"):
        assert (written / "model.safetensors").is_file()


COMMANDS = ("train", "rank", "adapt", "evaluate", "predict")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_table(name: str, command: str, mlora_run: Path, tmp_path: Path) -> None:
    case = CASES[name]
    base = click_table(rows=400, seed=3)
    if command == "adapt":
        base = base.with_columns(pl.lit("dnew").alias("scene"))
    folder = tmp_path / "in"
    folder.mkdir()
    path = case.write(base, folder)
    args, written = invoke(command, path, tmp_path, mlora_run)
    result = runner.invoke(app, args)
    expected = case.outcome(command)
    if expected is None:
        assert result.exit_code == 0, result.output
        check_success(command, written)
        return
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: " + expected.format(path=path)), lines[0]
    assert not written.exists()


CONFIG_CASES = {
    "a feature declared twice": (
        lambda tree: tree["data"]["features"].append({"name": "item"}),
        "data: feature 'item' is declared twice; declare each column once",
    ),
    "a feature that is the label": (
        lambda tree: tree["data"]["features"].append({"name": "click"}),
        "data: column 'click' is both a feature and a label; drop it from features",
    ),
    "a domain that is the label": (
        lambda tree: tree["data"].update(domain="click"),
        "data: column 'click' is both the label and the domain",
    ),
    "a label listed twice": (
        lambda tree: tree["data"].update(label=["click", "click"]),
        "data: label 'click' is listed twice",
    ),
    "a feature that is the domain": (lambda tree: tree["data"]["features"].append({"name": "scene"}), OK),
}


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_hostile_config(name: str, tmp_path: Path) -> None:
    """A config's columns are checked before anything is read; the domain may also be a feature."""
    change, expected = CONFIG_CASES[name]
    click_table(rows=400).write_parquet(tmp_path / "clicks.parquet")
    tree = table_config(tmp_path / "clicks.parquet", epochs=1)
    change(tree)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tree))
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run"), "--quiet"])
    if expected is OK:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {config}: {expected}"
    assert not (tmp_path / "run").exists()
