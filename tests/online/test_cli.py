"""`mdctr online ...`: results, plot and table; every bad config one line with exit 2; real
candidates scored by a trained run."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from mdctr.cli import app
from mdctr.online.candidates import category_ids, read_candidates, score_candidates
from mdctr.online.config import AuctionConfig, ExperimentConfig, load, parse
from mdctr.predictor import Predictor

from ..test_cli import fails

runner = CliRunner()
EXPERIMENT = {
    "arms": [0.03, 0.06],
    "delay": {"kind": "exponential", "mean": 12},
    "users_per_step": 100,
    "steps": 96,
    "seeds": 6,
    "draws": 200,
}
AUCTION = {
    "auctions": 200,
    "ic_auctions": 20,
    "ic_grid": 11,
    "learned": {"dim": 8, "heads": 2, "steps": 5, "batch": 64},
}


def write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "online.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_experiment_prints_writes_and_plots(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["online", "experiment", str(write(tmp_path, EXPERIMENT)), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    for policy in ("split", "thompson", "delay_corrected"):
        assert policy in result.stdout
    saved = json.loads((tmp_path / "o" / "experiment.json").read_text())
    assert [p["policy"] for p in saved["policies"]] == ["split", "thompson", "delay_corrected"]
    assert saved["config"]["seeds"] == 6 and len(saved["regret_curve"]["split"]) == 96
    assert (tmp_path / "o" / "regret.png").read_bytes()[:4] == b"\x89PNG"


def test_auction_prints_and_writes(tmp_path: Path) -> None:
    cfg = write(tmp_path, AUCTION)
    result = runner.invoke(app, ["online", "auction", str(cfg), "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "o" / "auction.json").read_text())
    assert set(saved["mechanisms"]) == {"gsp", "vcg", "learned"}
    assert saved["mechanisms"]["vcg"]["ic_violation"] <= 1e-9
    assert saved["candidates"] == "simulated"


@pytest.mark.parametrize(
    ("kind", "tree", "message"),
    [
        (
            "auction",
            {"bidders": {"bid_mean": -1.0}},
            "online.yaml: bidders.bid_mean: Input should be greater than 0",
        ),
        (
            "auction",
            {"bidders": {"organic_value": -0.5}},
            "online.yaml: bidders.organic_value: Input should be greater",
        ),
        (
            "auction",
            {"slots": 4, "bidders": {"ads": 2, "organic": 1}},
            "online.yaml: slots 4 exceed the 3 candidates",
        ),
        ("auction", {"position": [1.0, 2.0, 0.5]}, "online.yaml: position: click factors may not increase"),
        ("auction", {"run": "runs/x"}, "online.yaml: run and candidates go together"),
        (
            "auction",
            {"learned": {"dim": 10, "heads": 4}},
            "online.yaml: learned: dim 10 is not a multiple of heads 4",
        ),
        ("auction", {"sltos": 3}, "online.yaml: unknown key 'sltos'"),
        (
            "experiment",
            {"delay": {"kind": "pareto", "scale": 10, "shape": 1.0}},
            "online.yaml: delay: a pareto delay with shape 1 has no mean; use shape > 1",
        ),
        (
            "experiment",
            {"delay": {"kind": "lognormal"}},
            "online.yaml: delay: a lognormal delay needs its mean",
        ),
        (
            "experiment",
            {"arms": [0.05, 0.05]},
            "online.yaml: arms: the best conversion probability must be unique",
        ),
        (
            "experiment",
            {"arms": [0.05, 1.2]},
            "online.yaml: arms: every conversion probability must lie strictly",
        ),
        ("experiment", {"min_steps": 500}, "online.yaml: min_steps 500 exceeds the horizon of 96 steps"),
    ],
)
def test_bad_configs_stop_with_one_line(tmp_path: Path, kind: str, tree: dict, message: str) -> None:
    base = EXPERIMENT if kind == "experiment" else AUCTION
    cfg = write(tmp_path, base | tree)
    fails(["online", kind, str(cfg), "--out", str(tmp_path / "o")], message.replace("online.yaml", str(cfg)))


def test_missing_config_and_bad_override(tmp_path: Path) -> None:
    fails(
        ["online", "auction", str(tmp_path / "none.yaml")], f"config file {tmp_path / 'none.yaml'} not found"
    )
    cfg = write(tmp_path, EXPERIMENT)
    fails(
        ["online", "experiment", str(cfg), "--set", "threshold=2"],
        f"{cfg}: threshold: Input should be less than 1",
    )


def test_shipped_online_configs_are_valid() -> None:
    shipped = Path(__file__).parents[2] / "configs" / "online"
    assert load(ExperimentConfig, shipped / "experiment.yaml").arms
    assert load(AuctionConfig, shipped / "auction.yaml").slots == 3


def test_category_ids_keep_the_most_frequent_values() -> None:
    import polars as pl

    column = pl.Series("genres", [["Drama", "War"], ["Comedy"], ["Drama"], ["Horror"], ["Drama"], ["Comedy"]])
    assert category_ids(column, 3).tolist() == [0, 1, 0, 2, 0, 1]


def test_a_trained_run_scores_real_candidates(mlora_run: Path, tmp_path: Path) -> None:
    table = mlora_run.parent / "clicks.parquet"
    tree = AUCTION | {
        "run": str(mlora_run),
        "candidates": {
            "table": str(table),
            "items": ["item", "category", "price", "tags"],
            "category": "category",
        },
        "bidders": {"ads": 3, "organic": 3, "categories": 3},
    }
    cfg = parse(AuctionConfig, tree)
    frame = read_candidates(cfg.candidates)
    q, category = score_candidates(str(mlora_run), frame, cfg, np.random.default_rng(0))
    assert q.shape == category.shape == (200, 6)
    assert ((q > 0) & (q < 1)).all() and set(np.unique(category)) <= {0, 1, 2}
    # the same user-item rows scored by the Predictor directly
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, len(frame), 200), rng.integers(0, len(frame), (200, 6))
    row = frame[[int(items[0, 2])]].with_columns(frame[[int(users[0])]].select("scene", "user"))
    assert np.isclose(q[0, 2], Predictor(mlora_run, backend="torch").predict_frame(row)[0], rtol=1e-5)
    result = runner.invoke(
        app, ["online", "auction", str(write(tmp_path, tree)), "--out", str(tmp_path / "o"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o" / "auction.json").read_text())["candidates"] == "run"
    bad = tree | {"candidates": {**tree["candidates"], "items": ["item", "colour"], "category": "item"}}
    fails(["online", "auction", str(write(tmp_path, bad))], "candidates.items: ['colour'] not columns of")
