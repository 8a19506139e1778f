"""Crash safety: a training process killed with SIGKILL at random points leaves a run directory
whose every file loads and that `--resume` finishes to the metrics of an uninterrupted run; a full
disk or an unwritable --out is one line and exit code 2."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open
from typer.testing import CliRunner

from mdctr.cli import app

from .conftest import click_table, table_config

runner = CliRunner()
MDCTR = [str(Path(sys.executable).with_name("mdctr"))]


def _config(tmp_path: Path) -> Path:
    click_table(rows=12000, seed=5).write_parquet(tmp_path / "clicks.parquet")
    tree = table_config(tmp_path / "clicks.parquet", epochs=4, patience=10, checkpoint_every=7, threads=1)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _train(config: Path, out: Path, resume: bool = False) -> subprocess.Popen:
    args = [*MDCTR, "train", str(config), "--out", str(out), "--quiet", *(["--resume"] if resume else [])]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _every_file_loads(run: Path) -> None:
    for path in run.iterdir():
        if path.name.startswith("."):  # a killed atomic write's temporary file: never read
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118
                    handle.get_tensor(key)
        elif path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        elif path.suffix == ".md":
            path.read_text()


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    config = _config(tmp_path)
    started = time.perf_counter()
    whole = _train(config, tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.stderr.read().decode()
    duration = time.perf_counter() - started
    expected = json.loads((tmp_path / "whole" / "metrics.json").read_text())

    rng = random.Random(7)
    run, kills = tmp_path / "killed", 0
    for attempt in range(4):
        process = _train(config, run, resume=attempt > 0)
        if attempt < 3:  # kill somewhere between start-up and the end of an uninterrupted run
            try:
                process.wait(timeout=rng.uniform(0.3, 1.0) * duration)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                kills += 1
        assert process.wait(timeout=300) in (0, -signal.SIGKILL), process.stderr.read().decode()
        if run.exists():
            _every_file_loads(run)
        if process.returncode == 0:
            break
    assert kills >= 2, "the kills came too late to interrupt training"
    assert process.returncode == 0, process.stderr.read().decode()
    assert json.loads((run / "metrics.json").read_text()) == expected
    assert not list(run.glob(".*.tmp"))


def _fails(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.strip().startswith(f"error: {message}"), result.stderr


def test_an_unwritable_out_stops_before_reading_data(tmp_path: Path) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(table_config(tmp_path / "missing.parquet")))
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "run"
    _fails(
        ["train", str(config), "--out", str(out)], f"--out {out}: {tmp_path / 'file'} is a file, not a folder"
    )


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while the run directory is written: the write stops with one line, the
    file it was writing stays absent, and no temporary file is left."""
    import mdctr.data.cache as cache

    config = _config(tmp_path)
    real_fsync = os.fsync

    def full(fd: int) -> None:
        if "model.safetensors" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(cache.os, "fsync", full)
    out = tmp_path / "run"
    _fails(
        ["train", str(config), "--out", str(out), "--quiet", "--set", "train.epochs=1"],
        f"cannot write {out / 'model.safetensors'}: No space left on device; free disk space or choose another folder",
    )
    assert not (out / "model.safetensors").exists()
    assert not list(out.glob(".*.tmp"))


def test_outputs_under_a_file_are_one_line(mlora_run: Path, tmp_path: Path) -> None:
    """predict and evaluate name the output they cannot write."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    data = tmp_path / "rows.parquet"
    click_table(rows=50).write_parquet(data)
    target = blocker / "out.parquet"
    _fails(
        ["predict", str(mlora_run), str(data), "--out", str(target)],
        f"cannot write {target}: {blocker} is a file, not a folder",
    )
    _fails(
        ["evaluate", str(mlora_run), "--data", str(data), "--out", str(blocker / "m.json")],
        f"cannot write {blocker / 'm.json'}: {blocker} is a file, not a folder",
    )


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201
    """A 256 KB tmpfs (root only: skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_disk_is_one_line(small_disk: Path, tmp_path: Path) -> None:
    """Training into a disk too small for the run: one line naming the file, no partial file, and
    every file already written loads."""
    click_table(rows=20000, seed=5).write_parquet(tmp_path / "clicks.parquet")
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(table_config(tmp_path / "clicks.parquet", epochs=1)))
    out = small_disk / "run"
    result = runner.invoke(app, ["train", str(config), "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: cannot write {out}/"), line
    assert line.endswith("No space left on device; free disk space or choose another folder"), line
    assert not list(out.glob(".*.tmp"))
    _every_file_loads(out)
