"""CTNet: starts as its target tower, adds GLU adapters of the source's hidden blocks, never
trains the source; as an update it grows from a plain run and a source of the same lineage."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from mdctr.cli import app
from mdctr.config import ModelConfig, parse_experiment
from mdctr.data.schema import InputSpec
from mdctr.errors import InputError
from mdctr.grow import grown, row_maps
from mdctr.models.ctnet import CTNet, GLUAdapter
from mdctr.registry import build_model
from mdctr.runs import load_run
from mdctr.train import Trainer

from ..conftest import click_table, table_config
from .test_family import batch

runner = CliRunner()
SPEC = InputSpec(categorical=(20, 30), sequence=(10,), numeric=1, domains=3)
CFG = ModelConfig(hidden=(16, 8), dropout=0.3, embedding_init_std=0.1, transfer="ctnet")


def test_glu_adapter_is_the_gated_linear_unit() -> None:
    torch.manual_seed(0)
    adapter = GLUAdapter(5, 4)
    x = torch.randn(7, 5)
    assert not adapter(x).any()  # starts at zero
    torch.nn.init.normal_(adapter.value.weight)
    w1, b1, w2, b2 = adapter.value.weight, adapter.value.bias, adapter.gate.weight, adapter.gate.bias
    torch.testing.assert_close(adapter(x), (x @ w1.T + b1) * torch.sigmoid(x @ w2.T + b2))


@pytest.mark.parametrize("multidomain", ["none", "mlora"])
def test_a_fresh_ctnet_is_exactly_its_target_tower(multidomain: str) -> None:
    torch.manual_seed(0)
    model = build_model(SPEC, CFG.model_copy(update={"multidomain": multidomain})).eval()
    rows = batch()
    with torch.no_grad():
        assert torch.equal(model(rows), model.target(rows))


def test_each_target_block_adds_its_adapter_of_the_source_block() -> None:
    torch.manual_seed(0)
    model = build_model(SPEC, CFG).eval()
    for adapter in model.adapters:
        torch.nn.init.normal_(adapter.value.weight, std=0.5)
    rows = batch()
    src, tgt = model.source, model.target
    with torch.no_grad():  # by hand, calling each block's forward directly (no hooks)
        s = src.mlp.input_norm(src.embedding(rows).flatten(1))
        t = plain = tgt.mlp.input_norm(tgt.embedding(rows).flatten(1))
        for source_block, target_block, adapter in zip(
            src.mlp.layers, tgt.mlp.layers, model.adapters, strict=True
        ):
            s = source_block.forward(s)
            t = target_block.forward(t) + adapter(s)
            plain = target_block.forward(plain)
        expected = tgt.head(t).squeeze(-1)
        torch.testing.assert_close(model(rows), expected, rtol=0, atol=1e-6)
        assert not torch.allclose(expected, tgt.head(plain).squeeze(-1))


def test_training_never_touches_the_source_and_runs_it_without_dropout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(SPEC, CFG)
    source_before = {k: v.clone() for k, v in model.source.state_dict().items()}
    target_before = {k: v.clone() for k, v in model.target.state_dict().items()}
    cfg = parse_experiment(table_config(tmp_path / "x.parquet")).train
    trainer = Trainer(model, cfg)
    trainer._start_stage(trainer.stages[0])
    model.train()
    assert not model.source.training
    rows = batch()
    for _ in range(5):
        trainer.optimizer.zero_grad()
        trainer.objective(model(rows), rows.labels).backward()
        trainer.optimizer.step()
    assert all(torch.equal(v, source_before[k]) for k, v in model.source.state_dict().items())
    assert any(not torch.equal(v, target_before[k]) for k, v in model.target.state_dict().items())
    assert all(a.value.weight.abs().sum() > 0 for a in model.adapters)


def test_ctnet_needs_hidden_dense_layers() -> None:
    with pytest.raises(InputError, match="ctnet joins hidden dense layers; FM has none"):
        build_model(SPEC, CFG.model_copy(update={"backbone": "fm"}))


@pytest.fixture
def lineage(tmp_path: Path) -> Path:
    """A source run s1 on day 1, its update s2 on day 2, the day-2 rows of the target domain, and
    a run of another lineage (trained on day 2 alone)."""
    table = click_table(rows=6000)
    table[:3000].write_parquet(tmp_path / "day1.parquet")
    table[3000:].write_parquet(tmp_path / "day2.parquet")
    table[3000:].filter(pl.col("scene") == "d2").write_parquet(tmp_path / "target2.parquet")
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(table_config(tmp_path / "day1.parquet", epochs=1)))
    for args in (
        ["train", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "s1")],
        [
            "update",
            str(tmp_path / "s1"),
            "--data",
            str(tmp_path / "day2.parquet"),
            "--out",
            str(tmp_path / "s2"),
        ],
        ["train", str(tmp_path / "exp.yaml"), "--set", f"data.path={tmp_path / 'day2.parquet'}"]
        + ["--out", str(tmp_path / "other")],
    ):
        result = runner.invoke(app, [*args, "--quiet"])
        assert result.exit_code == 0, result.output
    return tmp_path


def test_a_ctnet_update_takes_the_target_from_its_parent_and_the_source_from_the_source_run(
    lineage: Path,
) -> None:
    out = lineage / "t2"
    args = [
        "update",
        str(lineage / "s1"),
        "--data",
        str(lineage / "target2.parquet"),
        "--source",
        str(lineage / "s2"),
    ]
    result = runner.invoke(app, [*args, "--out", str(out), "--set", "train.epochs=1", "--quiet"])
    assert result.exit_code == 0, result.output
    run, source = load_run(out), load_run(lineage / "s2")
    assert isinstance(run.model, CTNet) and run.experiment.model.transfer == "ctnet"
    assert run.encoder.fits(source.encoder)
    maps = row_maps(run.model.source, source.encoder, run.encoder)
    old = source.model.state_dict()  # the target's rows may add values: the source's rows stay as they were
    assert all(torch.equal(grown(k, old[k], v, maps), v) for k, v in run.model.source.state_dict().items())
    again = runner.invoke(app, ["update", str(out), *args[2:], "--out", str(lineage / "t3"), "--quiet"])
    assert again.exit_code == 0, again.output  # a CTNet run continues as a CTNet run
    exported = runner.invoke(app, ["export", str(lineage / "t3"), "--out", str(lineage / "t3.onnx")])
    assert exported.exit_code == 0, exported.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["update", "s1", "--data", "target2.parquet", "--source", "s2", "--set", "model.hidden=[8]"],
            "the model section differs",
        ),
        (["update", "s1", "--data", "target2.parquet", "--source", "other"], "encode differently"),
        (
            ["update", "s1", "--data", "target2.parquet", "--set", "model.transfer=ctnet"],
            "needs --source RUN",
        ),
        (["train", "exp.yaml", "--source", "s1"], "--source is for model.transfer: ctnet"),
    ],
)
def test_a_ctnet_update_refuses_runs_that_do_not_fit(lineage: Path, args: list[str], message: str) -> None:
    args = [str(lineage / a) if (lineage / a).exists() else a for a in args]
    result = runner.invoke(app, [*args, "--out", str(lineage / "bad"), "--quiet"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (lineage / "bad").exists()
