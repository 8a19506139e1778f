"""Data-parallel training on gloo with 2 CPU processes: equal to one process at the same global
batch, rank 0 alone writes, resume at N = 2 equals an uninterrupted N = 2 run; each rank's share
of the rows (in memory and streamed); ``mdctr train --nproc 2``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch
import torch.multiprocessing as mp
import yaml

from mdctr.config import parse_experiment
from mdctr.data.encode import Encoder
from mdctr.data.loader import TensorData, split_rows
from mdctr.data.stream import open_splits
from mdctr.data.table import schema_of
from mdctr.errors import InputError
from mdctr.pipeline import train_experiment
from mdctr.weights import load_tensors

from .conftest import click_table, table_config

RANKS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sparse_tags(rows: int) -> pl.DataFrame:
    """The click table with tags in one row of fifty: most ranks' parts of a batch hold only
    padding in the tags sequence."""
    frame = click_table(rows)
    keep = pl.int_range(pl.len()) % 50 == 0
    return frame.with_columns(pl.when(keep).then(pl.col("tags")).otherwise(pl.lit([], pl.List(pl.String))))


class _Stop(Exception):
    pass


def _stop_after_first_epoch(state: object) -> None:
    raise _Stop


def _worker(rank: int, port: int, tree: dict, out: str, stop: bool, resume: bool) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(RANKS),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(RANKS),
    )
    torch.set_num_threads(1)
    if rank:  # anything rank 1 writes fails the run

        def refuse(*args: object, **kwargs: object) -> None:
            raise RuntimeError(f"rank 1 wrote {args[:1]}")

        os.replace = refuse  # every atomic write ends in os.replace
        Path.mkdir = refuse  # type: ignore[method-assign]
    callbacks = [_stop_after_first_epoch] if stop else []
    try:
        train_experiment(parse_experiment(tree), out, resume=resume, callbacks=callbacks)
    except _Stop:
        pass
    finally:
        torch.distributed.destroy_process_group()


def _two_processes(tree: dict, out: Path, stop: bool = False, resume: bool = False) -> None:
    mp.spawn(_worker, args=(_free_port(), tree, str(out), stop, resume), nprocs=RANKS, join=True)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_tensors(run / "checkpoint.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


@pytest.mark.parametrize("multidomain", ["none", "mlora"])
def test_two_processes_equal_one_at_the_same_global_batch(tmp_path: Path, multidomain: str) -> None:
    table = tmp_path / "clicks.parquet"
    _sparse_tags(4000).write_parquet(table)
    tree = table_config(
        table, epochs=1, batch_size=22, sparse={"min_rows": 100, "optimizer": "rowwise_adagrad"}
    )
    tree["model"] |= {"dropout": 0.0, "multidomain": multidomain}
    experiment = parse_experiment(tree)
    one = train_experiment(experiment, tmp_path / "one")
    _two_processes(tree, tmp_path / "two")

    epoch = one.state.history[0]
    assert round(epoch["samples_per_s"] * epoch["seconds"]) / 22 > 100  # over 100 steps
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["overall"]["n"] == one.metrics["overall"]["n"]  # the test split scored whole
    assert abs(two["wauc"] - one.metrics["wauc"]) < 1e-5
    info = json.loads((tmp_path / "two" / "run.json").read_text())
    assert info["distributed"] == {"processes": 2, "backend": "gloo", "device": "cpu"}

    # most ranks' parts of a batch hold only padding in the tags sequence
    rows = TensorData(Encoder.load(tmp_path / "one" / "vocab.json").transform(pl.read_parquet(table)))
    assert (rows.rows.sequences[0] == 0).all(1).float().mean() > 0.9


def test_resume_at_two_processes_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    table = tmp_path / "clicks.parquet"
    click_table(3000).write_parquet(table)
    tree = table_config(table, epochs=2, batch_size=64)  # dropout 0.1: each rank's RNG must resume
    _two_processes(tree, tmp_path / "whole")
    _two_processes(tree, tmp_path / "cut", stop=True)
    assert (
        len(json.loads(load_tensors(tmp_path / "cut" / "checkpoint.safetensors")[1]["state"])["history"]) == 1
    )
    _two_processes(tree, tmp_path / "cut", resume=True)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert whole == json.loads((tmp_path / "cut" / "metrics.json").read_text())

    with pytest.raises(
        InputError, match=r"written by 2 training process\(es\), this is 1; resume with --nproc 2"
    ):
        train_experiment(parse_experiment(tree), tmp_path / "cut", resume=True)


def test_in_memory_shards_split_every_global_batch() -> None:
    assert split_rows(7, 2) == [(0, 4), (4, 7)]
    assert split_rows(1, 2) == [(0, 1), (1, 1)]
    frame = click_table(1000)
    experiment = parse_experiment(table_config(Path("unused.parquet")))
    encoder = Encoder.fit(frame, schema_of(experiment.data))
    data = TensorData(encoder.transform(frame))
    whole = list(data.batches(333, torch.Generator().manual_seed(3)))  # 333, 333, 333, 1 rows
    parts = [list(data.shard(r, 2).batches(333, torch.Generator().manual_seed(3))) for r in (0, 1)]
    assert [len(p) for p in parts] == [len(whole)] * 2
    for batch, first, second in zip(whole, *parts, strict=True):
        assert first.weight + second.weight == pytest.approx(2.0)
        if second.weight:
            assert torch.equal(torch.cat([first.sparse, second.sparse]), batch.sparse)
    assert parts[1][-1].weight == 0.0 and len(parts[1][-1]) == 1  # the 1-row batch: rank 1 fills in
    chunks = [next(data.shard(r, 2).chunks()) for r in (0, 1)]
    assert np.array_equal(np.concatenate([c.domain for c in chunks]), data.encoded.domain)


def test_streamed_shards_take_disjoint_row_groups_every_rank_some(tmp_path: Path) -> None:
    frame = click_table(3000).with_row_index("row")
    paths = {}
    for split, part in zip(
        ("train", "valid", "test"), (frame[:2000], frame[2000:2500], frame[2500:]), strict=True
    ):
        paths[split] = tmp_path / f"{split}.parquet"
        pq.write_table(part.to_arrow(), paths[split], row_group_size=130)  # 16 groups, the last of 50
    tree = table_config(paths["train"])
    tree["data"] |= {"valid_path": str(paths["valid"]), "test_path": str(paths["test"]), "streaming": True}
    tree["data"]["features"].append({"name": "row", "kind": "numeric"})
    cfg = parse_experiment(tree).data
    splits = open_splits(cfg, schema_of(cfg))
    encoder = Encoder.fit(splits.scan("train"), splits.schema, streaming=True)
    stream = splits.source("train", encoder, shuffle_buffer=300)
    shards = [stream.shard(r, 2) for r in (0, 1)]
    batches = [list(s.batches(64, torch.Generator().manual_seed(1))) for s in shards]
    assert len(batches[0]) == len(batches[1])  # every rank takes every step
    seen = [torch.cat([b.dense[:, -1] for b in bs if b.weight > 0]) for bs in batches]
    assert all(len(s) > 0 for s in seen)
    every = torch.cat(seen)
    assert len(every) == 2000 and len(torch.unique(every)) == 2000  # every row once, ranks disjoint
    assert all(len(b) <= 32 for bs in batches for b in bs)
    chunks = [np.concatenate([c.domain for c in s.chunks()]) for s in shards]
    assert min(map(len, chunks)) > 0 and sum(map(len, chunks)) == 2000

    with pytest.raises(InputError, match="16 row groups for 17 processes; every process needs its own"):
        stream.shard(0, 17)


def test_cli_trains_with_two_processes_and_reports_one_line_errors(tmp_path: Path) -> None:
    table = tmp_path / "clicks.parquet"
    click_table(2000).write_parquet(table)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(table_config(table, epochs=1)))
    command = [sys.executable, "-m", "mdctr", "train", str(config), "--nproc", "2", "--quiet"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "WAUC" in done.stdout and done.stdout.count("run directory") == 1  # rank 0 alone prints
    assert json.loads((tmp_path / "run" / "run.json").read_text())["distributed"]["processes"] == 2

    click_table(2000).drop("price").write_parquet(table)  # found by the processes, not the launcher
    failed = subprocess.run(
        [*command, "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=300
    )
    assert failed.returncode == 2
    assert "error: " in failed.stderr and "price" in failed.stderr
