"""OutRank-style ranking: exact MI, noise features last, redundancy, the command."""

import json
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import mutual_info_score
from typer.testing import CliRunner

from mdctr.cli import app
from mdctr.data.synthetic import NOISE, SCHEMA, SyntheticSpec, generate
from mdctr.features import codes, mutual_information, rank_features, redundancy

from .conftest import click_table, table_config


def synthetic(rows: int = 60_000) -> pl.DataFrame:
    return generate(SyntheticSpec(rows=rows, seed=5))


def test_mutual_information_equals_scikit_learn() -> None:
    frame = synthetic(20_000)
    y = frame["label"].to_numpy()
    for name, kind in (("user", "categorical"), ("price", "numeric"), ("tags", "sequence")):
        x = codes(frame, name, kind)
        assert abs(mutual_information(x, y) - mutual_info_score(x, y)) < 1e-12, name


def test_codes_keep_missing_values_apart_and_bin_numbers() -> None:
    frame = pl.DataFrame(
        {
            "a": ["x", None, "y", "x"],
            "n": [1.0, None, float("nan"), 5.0],
            "s": [["b", "a"], ["a", "b"], None, []],
        }
    )
    assert codes(frame, "a", "categorical").tolist() == [1, 0, 2, 1]
    n = codes(frame, "n", "numeric", bins=4)
    assert n[1] == n[2] and n[1] not in (n[0], n[3]) and n[0] != n[3]
    s = codes(frame, "s", "sequence")
    assert s[0] == s[1] and len(set(s.tolist())) == 3  # a set of items, order ignored


def test_planted_noise_ranks_last_and_scores_about_zero() -> None:
    ranking = rank_features(synthetic(), SCHEMA)
    names = [f.name for f in ranking.features]
    assert set(names[-2:]) == set(NOISE), names
    scores = {f.name: f.score for f in ranking.features}
    assert all(abs(scores[n]) < 5e-4 for n in NOISE), scores
    assert all(scores[n] > 1e-3 for n in ("user", "item", "category", "brand", "city", "device", "price"))
    noise_a = next(f for f in ranking.features if f.name == "noise_a")
    assert noise_a.mi > scores["device"]  # raw MI alone would rank 1,000-value noise above a real feature


def test_redundancy_finds_functions_and_ignores_chance() -> None:
    rng = np.random.default_rng(0)
    user = rng.integers(0, 3000, 100_000)
    assert redundancy(user, user // 10) > 0.95  # a region determined by the user
    assert redundancy(user, rng.integers(0, 3000, 100_000)) < 0.05  # independent, same cardinality
    assert redundancy(user, np.zeros_like(user)) == 0.0


def test_rank_command_prints_and_writes_json(tmp_path: Path) -> None:
    data = tmp_path / "clicks.parquet"
    click_table(rows=3000).write_parquet(data)
    tree = table_config(data)
    tree["data"]["features"].append({"name": "user_again"})
    frame = pl.read_parquet(data).with_columns(pl.col("user").alias("user_again"))
    frame.write_parquet(data)
    config = tmp_path / "exp.yaml"
    import yaml

    config.write_text(yaml.safe_dump(tree))
    result = CliRunner().invoke(app, ["features", "rank", str(config), "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "noise-corrected MI" in result.stdout
    ranking = json.loads((tmp_path / "r.json").read_text())
    assert [f["rank"] for f in ranking["features"]] == list(range(1, 8))
    assert {f["name"] for f in ranking["features"]} == {
        "user",
        "item",
        "category",
        "price",
        "tags",
        "user_again",
        "domain",
    }
    assert ranking["redundancy"]["user"]["user_again"] > 0.95
