"""The run directory (its files: ``mdctr.layout``): everything needed to reload and score
without the training data."""

from __future__ import annotations

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
from mdctr.layout import BEST, CONFIG, VOCAB
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


def _git_commit() -> str | None:
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
        "git_commit": _git_commit(),
    }


@dataclass
class Run:
    """A reloaded run: its experiment, encoder and model with the best weights."""

    path: Path
    experiment: Experiment
    encoder: Encoder
    model: nn.Module


def load_run(run_dir: str | Path) -> Run:
    """Reload a run directory for scoring; a missing or damaged part is an InputError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run directory {run_dir} not found; pass the --out folder of `mdctr train`")
    experiment = read_config(run_dir)
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
    return Run(run_dir, experiment, encoder, model)
