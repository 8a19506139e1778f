"""Recipes: joint vs two-stage MLoRA, the shared-model fallback, and resume across stages."""

from pathlib import Path

import pytest
import torch

from mdctr.config import Experiment, parse_experiment
from mdctr.data.encode import Encoder
from mdctr.data.loader import TensorData
from mdctr.data.table import prepare
from mdctr.errors import InputError
from mdctr.models.protocols import adapter_parameters
from mdctr.pipeline import train_experiment
from mdctr.registry import build_model
from mdctr.train import Trainer, TrainState, predict

from .conftest import table_config


def mlora_experiment(table_path: Path, **train: object) -> Experiment:
    tree = table_config(table_path, **{"recipe": "two_stage", "epochs": 2, **train})
    tree["model"].update(multidomain="mlora", lora={"reduce": 4})
    return parse_experiment(tree)


def setup(exp: Experiment) -> tuple[torch.nn.Module, TensorData, TensorData]:
    data = prepare(exp.data)
    enc = Encoder.fit(data.train, data.schema)
    torch.manual_seed(exp.train.seed)
    return (
        build_model(enc.input_spec(), exp.model),
        TensorData(enc.transform(data.train)),
        TensorData(enc.transform(data.valid)),
    )


def test_stage_two_moves_only_the_adapters(table_path: Path) -> None:
    exp = mlora_experiment(table_path, adapter={"epochs": 2, "lr": 0.01})
    model, train, valid = setup(exp)
    adapters = {id(p) for p in adapter_parameters(model)}
    snapshots: list[tuple[str, dict[str, torch.Tensor]]] = []

    def snapshot(state: TrainState) -> None:
        shared = {n: p.detach().clone() for n, p in model.named_parameters() if id(p) not in adapters}
        snapshots.append((state.history[-1]["stage"], shared))

    trainer = Trainer(model, exp.train, callbacks=[snapshot])
    trainer.fit(train, valid)
    stages = [s for s, _ in snapshots]
    assert stages == ["shared", "shared", "adapters", "adapters"]
    first_adapter_epoch, last = snapshots[2][1], snapshots[3][1]
    assert all(torch.equal(first_adapter_epoch[n], last[n]) for n in last)
    assert not all(torch.equal(snapshots[0][1][n], snapshots[1][1][n]) for n in last)
    assert trainer.state.history[2]["valid_auc"] != trainer.state.history[1]["valid_auc"]


def test_a_useless_stage_two_falls_back_to_the_shared_model(table_path: Path) -> None:
    exp = mlora_experiment(table_path, lr=0.01, epochs=6, adapter={"epochs": 2, "lr": 1000.0})
    model, train, valid = setup(exp)
    stage_one: list[float] = []
    trainer = Trainer(
        model, exp.train, callbacks=[lambda s: stage_one.append(s.best_auc) if s.stage == 0 else None]
    )
    state = trainer.fit(train, valid)
    assert stage_one[-1] > 0.54  # the shared model has learned, so wrecked adapters cannot beat it
    assert state.best_stage == "shared"
    assert [h["stage"] for h in state.history] == ["shared"] * 6 + ["adapters"] * 2
    assert max(h["valid_auc"] for h in state.history[6:]) < stage_one[-1]
    from mdctr.metrics import auc

    assert auc(valid.rows.labels[:, 0].numpy(), predict(model, valid)) == pytest.approx(
        stage_one[-1], abs=1e-12
    )


def test_resume_inside_stage_two_equals_uninterrupted(table_path: Path, tmp_path: Path) -> None:
    exp = mlora_experiment(table_path, adapter={"epochs": 2, "lr": 0.01})
    whole = train_experiment(exp, tmp_path / "whole").metrics

    class Cut(Exception):
        pass

    def cut(state: TrainState) -> None:
        if state.epoch == 3:
            raise Cut

    with pytest.raises(Cut):
        train_experiment(exp, tmp_path / "cut", callbacks=[cut])
    assert train_experiment(exp, tmp_path / "cut", resume=True).metrics == whole


def test_two_stage_needs_a_staged_model(table_path: Path, tmp_path: Path) -> None:
    tree = table_config(table_path, recipe="two_stage")
    with pytest.raises(InputError, match="train.recipe 'two_stage' needs a model with training stages"):
        train_experiment(parse_experiment(tree), tmp_path / "run")
    assert not (tmp_path / "run").exists()
