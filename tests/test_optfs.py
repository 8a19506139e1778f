"""OptFS: gates per categorical value, the continuation schedule, the selected set, retraining on it."""

import json
from pathlib import Path

import pytest
import torch

from mdctr.config import ModelConfig, parse_experiment
from mdctr.data.batch import Batch
from mdctr.data.schema import InputSpec
from mdctr.errors import InputError
from mdctr.layout import SELECTION
from mdctr.nn.embedding import FeatureGate, FieldEmbedding
from mdctr.pipeline import train_experiment
from mdctr.runs import load_run

from .conftest import table_config


def test_temperature_grows_geometrically_and_travels_with_the_weights() -> None:
    gate = FeatureGate(5, init=0.05, l1=1e-3, final_temperature=100.0)
    gate.set_progress(0.0)
    assert float(gate.temperature) == 1.0
    gate.set_progress(0.5)
    assert float(gate.temperature) == pytest.approx(10.0)
    gate.set_progress(1.0)
    assert "temperature" in gate.state_dict() and float(gate.state_dict()["temperature"]) == pytest.approx(
        100.0
    )
    gate(torch.tensor([[0, 3]]))
    assert float(gate.extra_loss().detach()) == pytest.approx(1e-3 * torch.sigmoid(torch.tensor(5.0)).item())
    assert float(gate.extra_loss()) == 0.0  # forgotten once taken


def test_the_l1_penalty_reaches_only_the_batchs_values() -> None:
    gate = FeatureGate(6, init=0.5, l1=0.1, final_temperature=10.0)
    rows = torch.tensor([[1, 4], [1, 2]])
    gate(rows)
    gate.extra_loss().backward()
    g = torch.sigmoid(torch.tensor(0.5))
    expected = torch.zeros(6)
    expected[[1, 4, 2]] = torch.tensor([2.0, 1.0, 1.0]) * 0.1 / 4 * g * (1 - g)  # d mean / d logit, t = 1
    torch.testing.assert_close(gate.logit.grad, expected)
    gate.eval()
    gate(rows)
    assert float(gate.extra_loss()) == 0.0  # evaluation leaves no penalty behind


def test_gates_scale_the_categorical_vectors() -> None:
    spec = InputSpec((6, 4), (), 0, 2)
    gate = FeatureGate(10, init=0.0, l1=0.0, final_temperature=10.0)
    emb = FieldEmbedding(spec, 3, 0.1, domain_as_feature=False, gate=gate)
    plain = FieldEmbedding(spec, 3, 0.1, domain_as_feature=False)
    plain.load_state_dict({k: v for k, v in emb.state_dict().items() if not k.startswith("gate.")})
    batch = Batch(torch.tensor([[2, 3], [5, 1]]), (), torch.zeros(2, 0), torch.zeros(2, dtype=torch.long))
    with torch.no_grad():
        gate.logit.fill_(50.0)
        gate.logit[6 + 3] = -50.0  # feature 1, id 3: closed
    out, ref = emb(batch), plain(batch)
    torch.testing.assert_close(out[1], ref[1])
    torch.testing.assert_close(out[0, 0], ref[0, 0])
    assert out[0, 1].abs().max() < 1e-12


def test_gates_need_plain_tables() -> None:
    with pytest.raises(ValueError, match="model.optfs.search needs model.embedding.kind: table"):
        ModelConfig(optfs={"search": True}, embedding={"kind": "hashed", "buckets": 10})


def test_search_writes_the_selected_set_and_retraining_uses_it(table_path: Path, tmp_path: Path) -> None:
    tree = table_config(table_path, epochs=4)
    tree["model"]["optfs"] = {"search": True, "l1": 0.05, "init": 0.01}
    searched = train_experiment(parse_experiment(tree), tmp_path / "search")
    selection = json.loads((tmp_path / "search" / SELECTION).read_text())
    assert set(selection["features"]) == {"user", "item", "category"}
    kept = {name: k for name, (k, _) in selection["kept"].items()}
    total = {name: n for name, (_, n) in selection["kept"].items()}
    assert sum(kept.values()) < sum(total.values())  # something was dropped
    assert all(len(selection["features"][n]) == kept[n] for n in kept)

    tree = table_config(table_path, epochs=2)
    tree["data"]["keep"] = str(tmp_path / "search" / SELECTION)
    retrained = train_experiment(parse_experiment(tree), tmp_path / "retrain")
    vocabs = load_run(tmp_path / "retrain").encoder.vocabs
    assert {n: len(vocabs[n]) for n in kept} == kept
    assert retrained.params < searched.params


def test_bad_keep_files_are_one_line_errors(table_path: Path, tmp_path: Path) -> None:
    def run(keep: Path) -> None:
        tree = table_config(table_path, epochs=1)
        tree["data"]["keep"] = str(keep)
        train_experiment(parse_experiment(tree), tmp_path / "run", overwrite=True)

    with pytest.raises(
        InputError, match=r"data.keep: .*nope.json not found; give the selected_features.json"
    ):
        run(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match=r"data.keep: .*bad.json is not a selected_features.json"):
        run(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"features": {"colour": ["red"]}}))
    with pytest.raises(InputError, match=r"data.keep names \['colour'\], which are not categorical features"):
        run(other)
