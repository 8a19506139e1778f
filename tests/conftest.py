"""Shared fixtures: small user tables written in tmp_path, and their experiment configs."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch

from mdctr.config import Experiment, parse_experiment
from mdctr.data.synthetic import SyntheticSpec, generate


def click_table(rows: int = 4000, seed: int = 7) -> pl.DataFrame:
    """A user-style click log: scene (domain), ids, a price, a tag list and a 0/1 click."""
    frame = generate(SyntheticSpec(rows=rows, domains=3, seed=seed))
    return frame.select(
        pl.col("domain").alias("scene"),
        pl.col("user"),
        pl.col("item"),
        pl.col("category"),
        pl.col("price"),
        pl.col("tags"),
        pl.col("label").alias("click"),
    )


def table_config(path: Path, **train: object) -> dict:
    """An experiment mapping for a table written by ``click_table``."""
    return {
        "name": "tiny",
        "data": {
            "path": str(path),
            "label": "click",
            "domain": "scene",
            "user": "user",
            "features": [
                {"name": "user"},
                {"name": "item"},
                {"name": "category"},
                {"name": "price", "kind": "numeric", "log1p": True},
                {"name": "tags", "kind": "sequence", "max_len": 3},
            ],
        },
        "model": {"backbone": "dnn", "hidden": [32, 16], "embedding_dim": 8, "dropout": 0.1},
        "train": {"epochs": 3, "batch_size": 256, "seed": 11, "patience": 5, **train},
    }


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture
def table_path(tmp_path: Path) -> Path:
    path = tmp_path / "clicks.parquet"
    click_table().write_parquet(path)
    return path


@pytest.fixture
def experiment(table_path: Path) -> Experiment:
    return parse_experiment(table_config(table_path))


@pytest.fixture(scope="session")
def mlora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained MLoRA run directory (read-only for the tests that share it)."""
    from mdctr.pipeline import train_experiment

    tmp = tmp_path_factory.mktemp("mlora-run")
    click_table().write_parquet(tmp / "clicks.parquet")
    tree = table_config(tmp / "clicks.parquet", epochs=2)
    tree["model"]["multidomain"] = "mlora"
    train_experiment(parse_experiment(tree), tmp / "run")
    return tmp / "run"
