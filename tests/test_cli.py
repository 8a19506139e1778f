"""The command line: the user's path end to end, and every bad input as one line + exit 2."""

from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from mdctr.cli import app
from mdctr.runs import write_checksums

from .conftest import click_table, table_config

runner = CliRunner()


def write_config(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def fails(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {message}"), lines[0]
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "clicks.csv"
    click_table().with_columns(pl.col("tags").list.join("|")).write_csv(data)
    cfg = write_config(tmp, table_config(data))
    result = runner.invoke(
        app, ["train", str(cfg), "--out", str(tmp / "run"), "--quiet", "--set", "train.epochs=2"]
    )
    assert result.exit_code == 0, result.output
    assert "overall" in result.stdout and "WAUC" in result.stdout
    return tmp / "run"


def test_evaluate_prints_the_table_and_writes_metrics(trained: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(trained)])
    assert result.exit_code == 0, result.output
    assert "d0" in result.stdout and "mean AUC" in result.stdout
    data = tmp_path / "labelled.parquet"
    click_table(rows=500, seed=3).write_parquet(data)
    result = runner.invoke(app, ["evaluate", str(trained), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert (trained / "metrics-labelled.json").is_file()


def test_predict_scores_unseen_categories_and_domains(trained: Path, tmp_path: Path) -> None:
    rows = (
        click_table(rows=50, seed=5)
        .drop("click")
        .with_columns(
            pl.when(pl.int_range(pl.len()) < 5)
            .then(pl.lit("brand-new-scene"))
            .otherwise(pl.col("scene"))
            .alias("scene"),
            pl.when(pl.int_range(pl.len()) % 2 == 0)
            .then(pl.lit(10**9))
            .otherwise(pl.col("item"))
            .alias("item"),
        )
    )
    data = tmp_path / "input.parquet"
    rows.write_parquet(data)
    out = tmp_path / "scores.csv"
    result = runner.invoke(app, ["predict", str(trained), str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    scores = pl.read_csv(out)
    assert scores.height == 50 and scores["score"].is_between(0, 1).all()
    assert scores["domain_seen"].to_list() == [False] * 5 + [True] * 45
    assert scores.columns[: len(rows.columns)] == rows.columns


BAD_TABLES = {
    "missing column": (lambda f: f.drop("price"), "{path}: column 'price' (numeric) not found; available:"),
    "misspelled column": (
        lambda f: f.rename({"category": "categroy"}),
        "{path}: column 'category' (categorical) not found; did you mean 'categroy'?",
    ),
    "wrong dtype": (
        lambda f: f.with_columns(pl.col("price").cast(pl.String) + "$"),
        "{path}: column 'price' is declared numeric but row 0 holds '",
    ),
    "NaN label": (
        lambda f: f.with_columns(
            pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("click")).alias("click")
        ),
        "{path}: label column 'click' has 1 missing/NaN values (first at row 3)",
    ),
    "label not 0/1": (
        lambda f: f.with_columns(pl.col("click") * 2),
        "{path}: label column 'click' must be 0/1, found 2.0",
    ),
    "empty file": (lambda f: f.head(0), "{path} has no rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_tables_stop_with_one_line_and_write_nothing(case: str, tmp_path: Path) -> None:
    change, message = BAD_TABLES[case]
    data = tmp_path / "clicks.parquet"
    change(click_table(rows=300)).write_parquet(data)
    cfg = write_config(tmp_path, table_config(data))
    out = tmp_path / "run"
    fails(["train", str(cfg), "--out", str(out)], message.format(path=data))
    assert not out.exists()


def test_empty_csv(tmp_path: Path) -> None:
    data = tmp_path / "clicks.csv"
    data.write_text("")
    fails(["train", str(write_config(tmp_path, table_config(data)))], f"{data} is empty")


def test_bad_config_and_model_name(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, table_config(tmp_path / "x.csv"))
    fails(
        ["train", str(cfg), "--set", "model.hiden=[4]"],
        f"{cfg}: unknown key 'model.hiden'; did you mean 'hidden'?",
    )
    fails(
        ["train", str(cfg), "--set", "model.backbone=resnet"],
        f"{cfg}: model.backbone: unknown model.backbone 'resnet'; choose one of: autoint, autoint_plus, dcnv2, deepfm, dnn, fgcnn, fm, hiformer, lr, wdl",
    )
    fails(["train", str(tmp_path / "none.yaml")], f"config file {tmp_path / 'none.yaml'} not found")


def test_unreadable_run_directories(trained: Path, tmp_path: Path) -> None:
    fails(["evaluate", str(tmp_path / "nowhere")], f"run directory {tmp_path / 'nowhere'} not found")
    tmp_path.joinpath("empty").mkdir()
    fails(
        ["evaluate", str(tmp_path / "empty")],
        f"{tmp_path / 'empty'} is not an mdctr run directory (no config.yaml)",
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.yaml", "vocab.json"):
        (broken / name).write_bytes((trained / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"garbage")
    scoring = ["predict", str(broken), str(tmp_path / "in.parquet"), "--out", str(tmp_path / "o.parquet")]
    fails(scoring, f"{broken} has no checksums.json: its training did not finish")
    write_checksums(broken)
    fails(scoring, f"{broken / 'model.safetensors'} is damaged")
    fails(
        ["predict", str(trained), str(tmp_path / "in.parquet"), "--out", str(tmp_path / "o.json")],
        f"--out {tmp_path / 'o.json'}: use a .parquet or .csv file name",
    )


def test_data_fetch_unknown_name() -> None:
    fails(
        ["data", "fetch", "movielens-20m"], "unknown dataset 'movielens-20m'; choose one of: movielens-100k"
    )
