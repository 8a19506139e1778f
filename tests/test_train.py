import json
from pathlib import Path

import polars as pl
import pytest

from mdctr.config import Experiment
from mdctr.pipeline import train_experiment
from mdctr.train import TrainState
from mdctr.weights import load_tensors


class Interrupt(Exception):
    pass


def stop_after(epochs: int):
    def callback(state: TrainState) -> None:
        if state.epoch == epochs:
            raise Interrupt

    return callback


def test_same_seed_gives_the_same_metrics(experiment: Experiment, tmp_path: Path) -> None:
    first = train_experiment(experiment, tmp_path / "a").metrics
    second = train_experiment(experiment, tmp_path / "b").metrics
    assert first == second
    other = experiment.model_copy(update={"train": experiment.train.model_copy(update={"seed": 12})})
    assert train_experiment(other, tmp_path / "c").metrics != first


def test_resume_equals_uninterrupted(experiment: Experiment, tmp_path: Path) -> None:
    whole = train_experiment(experiment, tmp_path / "whole")
    with pytest.raises(Interrupt):
        train_experiment(experiment, tmp_path / "cut", callbacks=[stop_after(2)])
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = train_experiment(experiment, tmp_path / "cut", resume=True)
    assert resumed.metrics == whole.metrics
    assert resumed.state.history[:2] != [] and len(resumed.state.history) == len(whole.state.history)
    assert [h["valid_auc"] for h in resumed.state.history] == [h["valid_auc"] for h in whole.state.history]
    best_a, _ = load_tensors(tmp_path / "whole" / "model.safetensors")
    best_b, _ = load_tensors(tmp_path / "cut" / "model.safetensors")
    assert all((best_a[k] == best_b[k]).all() for k in best_a)


def test_early_stopping_restores_the_best_weights(experiment: Experiment, tmp_path: Path) -> None:
    exp = experiment.model_copy(
        update={"train": experiment.train.model_copy(update={"epochs": 12, "patience": 1, "lr": 0.02})}
    )
    result = train_experiment(exp, tmp_path / "run")
    history = result.state.history
    best = max(history, key=lambda h: h["valid_auc"])
    assert result.state.best_epoch == best["epoch"]
    assert result.state.stopped and len(history) == best["epoch"] + 1
    from mdctr.pipeline import evaluate_run

    assert evaluate_run(tmp_path / "run") == result.metrics


def test_run_directory_describes_itself(experiment: Experiment, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_experiment(experiment, run)
    names = {p.name for p in run.iterdir()}
    assert {
        "config.yaml",
        "vocab.json",
        "model.safetensors",
        "checkpoint.safetensors",
        "metrics.json",
        "history.json",
        "run.json",
        "report.md",
        "domain_auc.png",
        "curves.png",
    } <= names
    assert not [n for n in names if n.endswith(".tmp")]
    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == experiment.train.seed
    assert {"torch", "numpy", "polars", "mdctr"} <= set(info["versions"])
    assert "git_commit" in info and info["train_samples_per_s"] > 0
    assert (run / "domain_auc.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_refuses_a_changed_config(experiment: Experiment, tmp_path: Path) -> None:
    from mdctr.errors import InputError

    with pytest.raises(Interrupt):
        train_experiment(experiment, tmp_path / "cut", callbacks=[stop_after(1)])
    changed = experiment.model_copy(update={"train": experiment.train.model_copy(update={"lr": 0.5})})
    with pytest.raises(
        InputError, match="the config differs from .*config.yaml; resume with the same config"
    ):
        train_experiment(changed, tmp_path / "cut", resume=True)
    with pytest.raises(InputError, match="already holds files; choose another --out, add --overwrite"):
        train_experiment(experiment, tmp_path / "cut")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="other holds files but no run .config.yaml.; choose another --out"):
        train_experiment(experiment, tmp_path / "other", resume=True)


def test_resume_without_a_checkpoint_trains_from_the_beginning(
    experiment: Experiment, tmp_path: Path
) -> None:
    """A run killed before its first checkpoint (or never started) is resumed by training it anew."""
    whole = train_experiment(experiment, tmp_path / "whole")
    with pytest.raises(Interrupt):
        train_experiment(experiment, tmp_path / "cut", callbacks=[stop_after(1)])
    (tmp_path / "cut" / "checkpoint.safetensors").unlink()
    (tmp_path / "cut" / ".model.safetensors.x1.tmp").write_bytes(b"partial")
    assert train_experiment(experiment, tmp_path / "cut", resume=True).metrics == whole.metrics
    assert train_experiment(experiment, tmp_path / "fresh", resume=True).metrics == whole.metrics
    assert not list((tmp_path / "cut").glob(".*.tmp"))


def separate(experiment: Experiment, **train: object) -> Experiment:
    return experiment.model_copy(
        update={
            "model": experiment.model.model_copy(update={"multidomain": "separate"}),
            "train": experiment.train.model_copy(update=train),
        }
    )


def test_separate_models_stop_early_per_domain(experiment: Experiment, tmp_path: Path) -> None:
    import numpy as np

    from mdctr.data.loader import TensorData
    from mdctr.data.table import prepare
    from mdctr.metrics import auc
    from mdctr.runs import load_run
    from mdctr.train import predict

    exp = separate(experiment, epochs=12, patience=2, lr=0.03)
    result = train_experiment(exp, tmp_path / "run")
    curves = np.array([h["valid_domain_auc"] for h in result.state.history])  # (epochs, domains)
    run = load_run(tmp_path / "run")
    valid = TensorData(run.encoder.transform(prepare(exp.data).valid))
    prob, label, domain = (
        predict(run.model, valid),
        valid.rows.labels[:, 0].numpy(),
        valid.rows.domain.numpy(),
    )
    for d in range(curves.shape[1]):  # each domain's model is its own best epoch's
        assert auc(label[domain == d], prob[domain == d]) == pytest.approx(curves[:, d].max(), abs=1e-12)
        best = int(curves[:, d].argmax())
        stop = best + 2  # the epoch (0-based) after which domain d froze
        if stop < len(curves) - 1:
            assert np.all(curves[stop:, d] == curves[stop, d]), d  # frozen: its AUC no longer moves
    assert result.state.stopped and len(curves) < 12
    assert len({int(curves[:, d].argmax()) for d in range(curves.shape[1])}) > 1  # domains stopped apart


def test_separate_resume_equals_uninterrupted(experiment: Experiment, tmp_path: Path) -> None:
    exp = separate(experiment, epochs=8, patience=1, lr=0.03)
    whole = train_experiment(exp, tmp_path / "whole")
    with pytest.raises(Interrupt):
        train_experiment(exp, tmp_path / "cut", callbacks=[stop_after(3)])
    resumed = train_experiment(exp, tmp_path / "cut", resume=True)
    assert resumed.metrics == whole.metrics
    assert resumed.state.domain_bad == whole.state.domain_bad


def test_user_columns_named_like_internal_ones_change_nothing(tmp_path: Path) -> None:
    from mdctr.config import parse_experiment

    from .conftest import click_table, table_config

    plain, odd = tmp_path / "plain.parquet", tmp_path / "odd.parquet"
    table = click_table(3000)
    table.write_parquet(plain)
    names = ("__domain__", "p", "file", "v", "len", "ids", "d", "0")
    table.with_columns(pl.lit(0.5).alias(n) for n in names).write_parquet(odd)
    first = train_experiment(parse_experiment(table_config(plain, epochs=2)), tmp_path / "a").metrics
    second = train_experiment(parse_experiment(table_config(odd, epochs=2)), tmp_path / "b").metrics
    assert first == second and "oracle" not in second
