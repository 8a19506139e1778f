"""Adding a domain to an MLoRA run: only the new adapter learns, other domains stay bit-identical."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from mdctr.cli import app
from mdctr.pipeline import predict_run

from .conftest import click_table, table_config

runner = CliRunner()


@pytest.fixture
def base_run(tmp_path: Path) -> tuple[Path, pl.DataFrame]:
    table = click_table(rows=6000)
    old, new = table.filter(pl.col("scene") != "d2"), table.filter(pl.col("scene") == "d2")
    old.write_parquet(tmp_path / "old.parquet")
    new.write_parquet(tmp_path / "new.parquet")
    tree = table_config(tmp_path / "old.parquet", epochs=2)
    tree["model"].update(multidomain="mlora", lora={"reduce": 4})
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(tree))
    result = runner.invoke(
        app, ["train", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "run"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "run", table


def test_adapt_trains_the_new_domain_and_leaves_the_others_bit_identical(base_run, tmp_path: Path) -> None:
    run, table = base_run
    table.drop("click").write_parquet(tmp_path / "all.parquet")
    before = predict_run(run, tmp_path / "all.parquet", tmp_path / "before.parquet")
    result = runner.invoke(
        app,
        [
            "adapt",
            str(run),
            "--domain",
            "d2",
            "--data",
            str(tmp_path / "new.parquet"),
            "--out",
            str(tmp_path / "grown"),
        ],
    )
    assert result.exit_code == 0, result.output
    after = predict_run(tmp_path / "grown", tmp_path / "all.parquet", tmp_path / "after.parquet")
    old_rows = (table["scene"] != "d2").to_numpy()
    np.testing.assert_array_equal(after["score"].to_numpy()[old_rows], before["score"].to_numpy()[old_rows])
    assert not before["domain_seen"].to_numpy()[~old_rows].any()
    assert after["domain_seen"].all()
    assert not np.allclose(after["score"].to_numpy()[~old_rows], before["score"].to_numpy()[~old_rows])
    metrics = (tmp_path / "grown" / "metrics-adapt.json").read_text()
    assert '"d2"' in metrics


def test_adapt_refuses_bad_requests(base_run, tmp_path: Path) -> None:
    run, _ = base_run
    new = str(tmp_path / "new.parquet")
    result = runner.invoke(app, ["adapt", str(run), "--domain", "d0", "--data", new])
    assert result.exit_code == 2 and f"domain 'd0' is already in {run}" in result.stderr
    result = runner.invoke(app, ["adapt", str(run), "--domain", "d9", "--data", new])
    assert result.exit_code == 2 and "need at least 10 rows of domain 'd9'; found 0" in result.stderr
