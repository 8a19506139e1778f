"""The run directory (its files: ``mdctr.layout``): everything needed to reload and score
without the training data."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
import yaml
from torch import nn

from mdctr.config import Experiment, parse_experiment
from mdctr.data.cache import atomic_write_text
from mdctr.data.encode import Encoder
from mdctr.errors import InputError
from mdctr.layout import BEST, CHECKSUMS, CONFIG, VOCAB
from mdctr.registry import build_model
from mdctr.weights import load_tensors


def write_json(path: Path, data: object) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_config(run_dir: Path, experiment: Experiment) -> None:
    atomic_write_text(run_dir / CONFIG, yaml.safe_dump(experiment.to_dict(), sort_keys=False))


def read_config(run_dir: Path) -> Experiment:
    path = run_dir / CONFIG
    if not path.is_file():
        raise InputError(
            f"{run_dir} is not an mdctr run directory (no {CONFIG}); "
            f"pass the --out folder of a finished `mdctr train`"
        )
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise InputError(f"{path} is not valid YAML; the run directory is damaged, train again") from None
    return parse_experiment(tree, where=str(path))


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def provenance(experiment: Experiment) -> dict:
    """Seed, library versions and git commit: what reproduces this run."""
    packages = ("mdctr", "torch", "numpy", "polars", "scikit-learn", "safetensors", "pydantic")
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "seed": experiment.train.seed,
        "split_seed": experiment.data.split.seed,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
        "git_commit": git_commit(),
    }


CHECKED = (CONFIG, VOCAB, BEST)  # what scoring reads: a change to any of them changes scores


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(run_dir: Path) -> None:
    """Record the SHA-256 of the files scoring reads: the last step of a finished run."""
    write_json(run_dir / CHECKSUMS, {name: file_digest(run_dir / name) for name in CHECKED})


def verify_checksums(run_dir: Path) -> dict[str, str]:
    """Refuse a run whose config, vocabulary or weights changed after it was written; the
    verified SHA-256 by file name."""
    path = run_dir / CHECKSUMS
    if not path.is_file():
        raise InputError(
            f"{run_dir} has no {CHECKSUMS}: its training did not finish (`mdctr train ... --out "
            f"{run_dir} --resume` finishes it) or an mdctr before 0.2 wrote it (train it again)"
        )
    try:
        recorded = json.loads(path.read_text())
        expected = {name: str(recorded[name]) for name in CHECKED}
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path} is damaged; train the run again") from None
    for name in CHECKED:
        if (run_dir / name).is_file() and file_digest(run_dir / name) != expected[name]:
            raise InputError(
                f"{run_dir / name} does not match its SHA-256 in {CHECKSUMS}: it changed after "
                f"training; restore the run directory or train it again"
            )
    return expected


@dataclass
class Run:
    """A reloaded run: its experiment, encoder and model with the best weights, and the verified
    SHA-256 of its files (``checksums[BEST]`` ties an exported graph to the weights)."""

    path: Path
    experiment: Experiment
    encoder: Encoder
    model: nn.Module
    checksums: dict[str, str]


def load_run(run_dir: str | Path) -> Run:
    """Reload a run directory for scoring; a missing, damaged or changed part is an InputError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run directory {run_dir} not found; pass the --out folder of `mdctr train`")
    experiment = read_config(run_dir)
    checksums = verify_checksums(run_dir)
    if not (run_dir / VOCAB).is_file():
        raise InputError(f"{run_dir} is not a complete run (no {VOCAB}); train it again")
    encoder = Encoder.load(run_dir / VOCAB)
    if not (run_dir / BEST).is_file():
        raise InputError(
            f"{run_dir} has no trained weights ({BEST}); finish training with "
            f"`mdctr train ... --out {run_dir} --resume`"
        )
    model = build_model(encoder.input_spec(), experiment.model)
    tensors, _ = load_tensors(run_dir / BEST)
    try:
        model.load_state_dict(tensors)
    except RuntimeError:
        raise InputError(
            f"{run_dir / BEST} does not match the model in {CONFIG}; the run is damaged, train it again"
        ) from None
    model.eval()
    return Run(run_dir, experiment, encoder, model, checksums)
