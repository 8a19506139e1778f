"""Several labels: one head per task, metrics per task, one score per task."""

from pathlib import Path

import polars as pl
import pytest

from mdctr.config import parse_experiment
from mdctr.errors import InputError
from mdctr.pipeline import predict_run, train_experiment

from .conftest import click_table, table_config


def two_label_table(path: Path) -> Path:
    table = click_table(3000)
    table.with_columns(
        (pl.col("price") > pl.col("price").median()).cast(pl.Int8).alias("expensive")
    ).write_parquet(path)
    return path


def test_a_deep_backbone_learns_two_tasks_and_reports_each(tmp_path: Path) -> None:
    tree = table_config(two_label_table(tmp_path / "t.parquet"), epochs=2)
    tree["data"]["label"] = ["click", "expensive"]
    result = train_experiment(parse_experiment(tree), tmp_path / "run")
    tasks = result.metrics["tasks"]
    assert list(tasks) == ["click", "expensive"]
    assert tasks["click"]["overall"] == result.metrics["overall"]
    assert tasks["expensive"]["overall"]["auc"] > 0.9  # price is a feature
    scored = predict_run(tmp_path / "run", tmp_path / "t.parquet", tmp_path / "scores.parquet")
    assert {"score_click", "score_expensive"} <= set(scored.columns) and "score" not in scored.columns


def test_single_task_models_refuse_several_labels(tmp_path: Path) -> None:
    tree = table_config(two_label_table(tmp_path / "t.parquet"))
    tree["data"]["label"] = ["click", "expensive"]
    tree["model"]["multidomain"] = "mlora"
    with pytest.raises(InputError, match="the data has 2 labels, and model.multidomain 'mlora'"):
        train_experiment(parse_experiment(tree), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_predict_refuses_to_overwrite_a_column_of_the_input(tmp_path: Path) -> None:
    path = two_label_table(tmp_path / "t.parquet")
    train_experiment(parse_experiment(table_config(path, epochs=1)), tmp_path / "run")
    pl.read_parquet(path).with_columns(pl.lit(1.0).alias("score")).write_parquet(tmp_path / "in.parquet")
    with pytest.raises(InputError, match="in.parquet: it already has a column 'score', which predict adds"):
        predict_run(tmp_path / "run", tmp_path / "in.parquet", tmp_path / "out.parquet")
