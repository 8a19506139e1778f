"""Streaming from parquet: exactly once per epoch, resume mid-epoch, exact evaluation, bad shards."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from mdctr.cli import app
from mdctr.config import ModelConfig, parse_experiment
from mdctr.data.encode import Encoder
from mdctr.data.loader import TensorData
from mdctr.data.schema import Feature, Schema
from mdctr.data.stream import ParquetStream, open_splits, streams, survey
from mdctr.data.synthetic import SCHEMA as SYNTHETIC
from mdctr.data.synthetic import SyntheticSpec, generate_shard, write_split
from mdctr.data.table import parquet_files
from mdctr.errors import InputError
from mdctr.pipeline import evaluate_run, train_experiment
from mdctr.registry import build_model
from mdctr.train import score

from ..conftest import click_table, table_config

ROW_SCHEMA = Schema(
    features=(Feature(name="row"), Feature(name="item"), Feature(name="tags", kind="sequence", max_len=3)),
    domain=("scene",),
    labels=("click",),
)


def write_shards(folder: Path, rows: int, files: int, row_group: int, seed: int = 7) -> Path:
    """``click_table`` rows with a unique ``row`` id, in ``files`` parquet files."""
    frame = click_table(rows, seed).with_columns(pl.int_range(pl.len()).cast(pl.String).alias("row"))
    folder.mkdir(parents=True)
    for k, part in enumerate(np.array_split(np.arange(rows), files)):
        frame[part].write_parquet(folder / f"part-{k}.parquet", row_group_size=row_group)
    return folder


def stream_of(folder: Path, buffer: int) -> tuple[ParquetStream, Encoder]:
    files = parquet_files(folder)
    encoder = Encoder.fit(pl.scan_parquet(files), ROW_SCHEMA, streaming=True)
    return ParquetStream(survey(files, ROW_SCHEMA), encoder, buffer), encoder


@pytest.mark.parametrize("buffer", [1, 700, 100_000])
def test_every_row_once_per_epoch_in_a_new_order(tmp_path: Path, buffer: int) -> None:
    stream, _ = stream_of(write_shards(tmp_path / "d", 3000, 3, 250), buffer)
    epochs = []
    for epoch in range(3):
        g = torch.Generator().manual_seed(epoch)
        ids = torch.cat([b.sparse[:, 0] for b in stream.batches(128, g)])
        assert sorted(ids.tolist()) == list(range(2, 3002))  # vocabulary ids of rows 0..2999
        epochs.append(ids)
    assert not torch.equal(epochs[0], epochs[1])
    again = torch.cat([b.sparse[:, 0] for b in stream.batches(128, torch.Generator().manual_seed(0))])
    assert torch.equal(again, epochs[0])


def test_without_a_generator_rows_come_in_file_order_and_by_domain_sorts_each_batch(tmp_path: Path) -> None:
    stream, encoder = stream_of(write_shards(tmp_path / "d", 1000, 2, 300), 400)
    rows = torch.cat([b.sparse[:, 0] for b in stream.batches(64)])
    vocab = encoder.vocabs["row"]
    assert [int(vocab[i - 2]) for i in rows.tolist()] == list(range(1000))
    for batch in stream.batches(64, torch.Generator().manual_seed(1), by_domain=True):
        assert bool((batch.domain[1:] >= batch.domain[:-1]).all())


def test_an_epoch_starts_at_any_batch_without_changing_the_rest(tmp_path: Path) -> None:
    stream, _ = stream_of(write_shards(tmp_path / "d", 2000, 2, 300), 500)
    whole = [b.sparse for b in stream.batches(100, torch.Generator().manual_seed(3))]
    for start in (0, 4, 5, 13, len(whole)):
        tail = [b.sparse for b in stream.batches(100, torch.Generator().manual_seed(3), start=start)]
        assert len(tail) == len(whole) - start
        assert all(torch.equal(a, b) for a, b in zip(tail, whole[start:], strict=True))


def test_streamed_vocabularies_and_scores_equal_the_in_memory_ones(tmp_path: Path) -> None:
    folder = write_shards(tmp_path / "d", 2500, 3, 200)
    stream, encoder = stream_of(folder, 1000)
    frame = pl.read_parquet(parquet_files(folder))
    in_memory = Encoder.fit(frame, ROW_SCHEMA)
    assert encoder.vocabs == in_memory.vocabs and encoder.domains == in_memory.domains
    torch.manual_seed(0)
    model = build_model(encoder.input_spec(), ModelConfig(hidden=(8,), embedding_dim=4))
    streamed = score(model, stream, batch_size=300)
    whole = score(model, TensorData(in_memory.transform(frame)), batch_size=300)
    np.testing.assert_array_equal(streamed.prob, whole.prob)
    np.testing.assert_array_equal(streamed.labels, whole.labels)


def split_config(root: Path, **data: object) -> dict:
    tree = table_config(root / "train")
    tree["data"].update(
        valid_path=str(root / "valid"), test_path=str(root / "test"), **{"streaming": True, **data}
    )
    tree["train"].update(epochs=2)
    return tree


def write_splits(root: Path) -> Path:
    for i, (split, rows) in enumerate((("train", 3000), ("valid", 800), ("test", 800))):
        write_shards(root / split, rows, 2, 200, seed=7 + i)
    return root


class Interrupt(Exception):
    pass


def interrupt_training_after(monkeypatch: pytest.MonkeyPatch, cls: type, steps: int) -> None:
    """Make ``cls.batches`` raise after ``steps`` training batches (those with a generator)."""
    original, served = cls.batches, [0]

    def batches(self, batch_size, generator=None, by_domain=False, start=0):  # noqa: ANN001, ANN202
        for batch in original(self, batch_size, generator, by_domain, start):
            if generator is not None:
                served[0] += 1
                if served[0] > steps:
                    raise Interrupt
            yield batch

    monkeypatch.setattr(cls, "batches", batches)


@pytest.mark.parametrize("streaming", [True, False])
def test_a_run_interrupted_mid_epoch_resumes_to_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streaming: bool
) -> None:
    tree = split_config(write_splits(tmp_path / "data"), streaming=streaming, shuffle_buffer=700)
    tree["train"].update(checkpoint_every=4)
    experiment = parse_experiment(tree)
    whole = train_experiment(experiment, tmp_path / "whole")
    with monkeypatch.context() as patch:
        interrupt_training_after(patch, ParquetStream if streaming else TensorData, 12 + 7)  # epoch 2, step 7
        with pytest.raises(Interrupt):
            train_experiment(experiment, tmp_path / "cut")
    resumed = train_experiment(experiment, tmp_path / "cut", resume=True)
    assert resumed.metrics == whole.metrics
    assert [h["train_loss"] for h in resumed.state.history] == [h["train_loss"] for h in whole.state.history]


def test_a_streamed_run_trains_evaluates_and_reports_its_oracle(tmp_path: Path) -> None:
    spec = SyntheticSpec(rows=20_000, domains=3, seed=1)
    for split, rows in (("train", 20_000), ("valid", 2000), ("test", 3000)):
        write_split(spec, tmp_path, split, rows, shard_rows=8000, row_group=2000)
    tree = {
        "name": "synth",
        "data": {
            "path": str(tmp_path / "train"),
            "valid_path": str(tmp_path / "valid"),
            "test_path": str(tmp_path / "test"),
            "label": "label",
            "domain": "domain",
            "oracle": "p",
            "features": [f.model_dump() for f in SYNTHETIC.features],
            "streaming": True,
        },
        "model": {"hidden": [32], "embedding_dim": 8},
        "train": {"epochs": 3, "lr": 0.005, "batch_size": 512},
    }
    result = train_experiment(parse_experiment(tree), tmp_path / "run")
    assert result.metrics["overall"]["n"] == 3000 and result.metrics["oracle"]["auc"] > 0.75
    assert result.metrics["overall"]["auc"] > 0.57  # 0.603 measured
    assert evaluate_run(tmp_path / "run") == result.metrics  # the test split streamed again


def test_synth_shards_are_reproducible_and_distinct() -> None:
    spec = SyntheticSpec(rows=10, domains=3)
    first, again, other = (
        generate_shard(spec, 0, 500),
        generate_shard(spec, 0, 500),
        generate_shard(spec, 1, 500),
    )
    assert first.equals(again) and not first.equals(other)
    assert first.columns == other.columns


def test_synth_command_writes_a_streaming_experiment(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    args = ["data", "synth", "--out", str(out), "--rows", "2500", "--valid-rows", "300", "--test-rows", "300"]
    result = CliRunner().invoke(app, [*args, "--shard-rows", "1000", "--row-group", "400"])
    assert result.exit_code == 0, result.output
    assert [pl.read_parquet(f).height for f in parquet_files(out / "train")] == [1000, 1000, 500]
    experiment = parse_experiment(yaml.safe_load((out / "experiment.yaml").read_text()))
    assert streams(experiment.data) and open_splits(experiment.data, SYNTHETIC).pieces["train"][0].rows == 400
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "already holds files" in again.output


def test_auto_streams_only_above_the_memory_budget(tmp_path: Path) -> None:
    tree = split_config(write_splits(tmp_path / "data"), streaming="auto")
    assert not streams(parse_experiment(tree).data)
    tree["data"]["memory_budget_mb"] = 1
    tree["data"]["path"] = str(tmp_path / "big")
    write_shards(tmp_path / "big", 60_000, 2, 10_000)
    assert streams(parse_experiment(tree).data)


def broken(root: Path, kind: str) -> Path:
    target = root / "train" / "part-1.parquet"
    if kind == "missing column":
        pl.read_parquet(target).drop("item").write_parquet(target)
    elif kind == "truncated":
        target.write_bytes(target.read_bytes()[:300])
    elif kind == "type change":
        pl.read_parquet(target).with_columns(pl.col("price").cast(pl.String)).write_parquet(target)
    elif kind == "bad label":
        frame = pl.read_parquet(target)
        frame.with_columns(
            pl.when(pl.int_range(pl.len()) == 5).then(3).otherwise(pl.col("click")).alias("click")
        ).write_parquet(target)
    elif kind in ("one-class validation", "feature null everywhere"):
        split, change = (
            ("valid", pl.lit(0).alias("click"))
            if kind == "one-class validation"
            else ("train", pl.lit(None, pl.Int64).alias("category"))
        )
        for path in sorted((root / split).glob("*.parquet")):
            pl.read_parquet(path).with_columns(change).write_parquet(path)
    return target


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing column", r"part-1.parquet: column 'item' \(categorical\) not found"),
        ("truncated", r"part-1.parquet: not a readable parquet file \(.*\); write it again or remove it"),
        ("type change", r"part-1.parquet: column 'price' is declared numeric but holds String"),
        ("bad label", r"part-1.parquet: label column 'click' holds 3; every label must be 0 or 1"),
        ("one-class validation", r"data/valid: label column 'click' is 0 in every validation row"),
        (
            "feature null everywhere",
            r"data/train: feature 'category' has no value in the training rows \(it is null in every row\)",
        ),
    ],
)
def test_a_bad_shard_stops_with_one_line_naming_it_and_writes_nothing(
    tmp_path: Path, kind: str, message: str
) -> None:
    root = write_splits(tmp_path / "data")
    broken(root, kind)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(split_config(root)))
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: ") and re.search(message, line), line
    assert not (tmp_path / "run").exists()


def test_a_column_changing_type_between_shards_is_named(tmp_path: Path) -> None:
    root = write_splits(tmp_path / "data")
    target = root / "train" / "part-1.parquet"
    pl.read_parquet(target).with_columns(pl.col("item").cast(pl.String)).write_parquet(target)
    with pytest.raises(
        InputError, match=r"part-1.parquet: column 'item' is String here but Int64 in .*part-0"
    ):
        open_splits(parse_experiment(split_config(root)).data, ROW_SCHEMA)


def test_streaming_needs_its_own_split_files(tmp_path: Path) -> None:
    tree = table_config(tmp_path / "clicks.parquet")
    tree["data"]["streaming"] = True
    with pytest.raises(InputError, match="data.streaming needs your own parquet files"):
        streams(parse_experiment(tree).data)
