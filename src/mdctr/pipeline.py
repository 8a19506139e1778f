"""The user's path as library calls: train an experiment into a run directory, evaluate
a run, score a table with a run. The CLI is a thin shell over these."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from mdctr import runs
from mdctr.config import Experiment
from mdctr.data.cache import atomic_write, atomic_write_text
from mdctr.data.encode import Encoder
from mdctr.data.loader import TensorData
from mdctr.data.table import DOMAIN_KEY, prepare, read_table
from mdctr.errors import InputError
from mdctr.metrics import evaluate
from mdctr.models.stages import adapter_parameters
from mdctr.nn.embedding import FieldEmbedding
from mdctr.registry import build_model
from mdctr.report import markdown, plot_curves, plot_domains
from mdctr.train import CHECKPOINT, Trainer, TrainState, predict

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What `train_experiment` produced."""

    run_dir: Path
    metrics: dict
    state: TrainState
    preprocess_s: float
    params: int
    adapter_params: int


def _claim_run_dir(out: Path, experiment: Experiment, resume: bool, overwrite: bool) -> None:
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise InputError(f"nothing to resume in {out}: no {CHECKPOINT}; start without --resume")
        saved = runs.read_config(out)
        if saved.model_dump(exclude={"name"}) != experiment.model_dump(exclude={"name"}):
            raise InputError(
                f"the config differs from {out / runs.CONFIG}; resume with the same config "
                f"and --set values, or train into a new --out"
            )
        return
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(
            f"{out} already holds files; choose another --out, add --overwrite, "
            f"or --resume an interrupted run"
        )


def train_experiment(
    experiment: Experiment,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    callbacks: Sequence[Callable[[TrainState], None]] = (),
) -> TrainResult:
    """Check and encode the data, train, evaluate on the test split and write the run directory.

    Nothing is written before the data and config have been checked.
    """
    out = Path(out)
    _claim_run_dir(out, experiment, resume, overwrite)
    start = time.perf_counter()
    data = prepare(experiment.data)
    encoder = Encoder.load(out / runs.VOCAB) if resume else Encoder.fit(data.train, data.roles)
    if experiment.data.keep is not None and not resume:
        encoder = encoder.restricted(read_selection(experiment.data.keep))
    encoded_test = encoder.transform(data.test)
    train, valid = (TensorData(encoder.transform(f)) for f in (data.train, data.valid))
    test, test_user = TensorData(encoded_test), encoded_test.user
    oracle = data.test.select(ORACLE) if ORACLE in data.test.columns else None
    del data  # the raw tables (hundreds of MB on ml1m) are not needed once encoded
    preprocess_s = time.perf_counter() - start
    log.info(
        "data: %d train, %d valid, %d test rows, %d domains, encoded in %.1f s",
        len(train),
        len(valid),
        len(test),
        len(encoder.domains),
        preprocess_s,
    )

    torch.manual_seed(experiment.train.seed)
    model = build_model(encoder.input_spec(), experiment.model)
    params = sum(p.numel() for p in model.parameters())
    trainer = Trainer(model, experiment.train, out, progress=progress, callbacks=callbacks)
    if not resume:
        if overwrite and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        runs.write_config(out, experiment)
        encoder.save(out / runs.VOCAB)
    state = trainer.fit(train, valid, resume=resume)

    prob = predict(model, test, experiment.train.eval_batch_size)
    metrics = evaluate(test.rows.label.numpy(), prob, test.rows.domain.numpy(), encoder.domains, test_user)
    if oracle is not None:
        metrics["oracle"] = oracle_metrics(oracle, test, encoder.domains)
    rates = [h["samples_per_s"] for h in state.history]
    info = {
        **runs.provenance(experiment),
        "params": params,
        "preprocess_s": round(preprocess_s, 3),
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch,
        "train_samples_per_s": round(float(np.median(rates)), 1) if rates else None,
    }
    _write_results(out, experiment.name, metrics, state.history, info)
    selection = selected_features(model, encoder)
    if selection is not None:
        runs.write_json(out / SELECTION, selection)
    adapters = sum(p.numel() for p in adapter_parameters(model))
    return TrainResult(out, metrics, state, preprocess_s, params, adapters)


ORACLE = "p"
SELECTION = "selected_features.json"


def selected_features(model: torch.nn.Module, encoder: Encoder) -> dict | None:
    """The feature set an OptFS search kept: per categorical feature, its values whose gate ended
    open (``{"features": {name: [values]}, "kept": {name: [kept, of]}}``); None without gates."""
    embedding = next(
        (m for m in model.modules() if isinstance(m, FieldEmbedding) and m.gate is not None), None
    )
    if embedding is None:
        return None
    selected = embedding.gate.selected()
    features, kept = {}, {}
    for f, name in enumerate(encoder.categorical):
        start = int(embedding.offsets[f]) + 2  # rows PAD, OOV first
        vocab = encoder.vocabs[name]
        features[name] = [
            v for v, on in zip(vocab, selected[start : start + len(vocab)].tolist(), strict=True) if on
        ]
        kept[name] = [len(features[name]), len(vocab)]
    return {"features": features, "kept": kept}


def read_selection(path: str | Path) -> dict[str, list[str]]:
    """The kept values of a ``selected_features.json``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"data.keep: {path} not found; give the selected_features.json of an OptFS search run"
        )
    try:
        return {k: [str(v) for v in values] for k, values in json.loads(path.read_text())["features"].items()}
    except (ValueError, KeyError, AttributeError, TypeError):
        raise InputError(f"data.keep: {path} is not a selected_features.json; run a search again") from None


def oracle_metrics(frame: pl.DataFrame, data: TensorData, domains: list[str]) -> dict:
    """The ceiling on synthetic data: AUC of the true click probability, overall and per domain."""
    truth = evaluate(data.rows.label.numpy(), frame[ORACLE].to_numpy(), data.rows.domain.numpy(), domains)
    return {
        "auc": truth["overall"]["auc"],
        "mean_auc": truth["mean_auc"],
        "wauc": truth["wauc"],
        "domains": {name: d["auc"] for name, d in truth["domains"].items()},
    }


def _write_results(out: Path, title: str, metrics: dict, history: list[dict], info: dict) -> None:
    runs.write_json(out / runs.METRICS, metrics)
    runs.write_json(out / runs.HISTORY, history)
    runs.write_json(out / runs.INFO, info)
    atomic_write_text(out / runs.REPORT, markdown(metrics, title, history))
    plot_domains(metrics, str(out / "domain_auc.png"))
    if history:
        plot_curves(history, str(out / "curves.png"))


def _score_frame(
    run: runs.Run, frame: pl.DataFrame, where: str, need_label: bool
) -> tuple[np.ndarray, TensorData, np.ndarray | None]:
    encoded = run.encoder.encode_table(frame, where, need_label)
    data = TensorData(encoded)
    return predict(run.model, data, run.experiment.train.eval_batch_size), data, encoded.user


def evaluate_run(run_dir: str | Path, data_path: str | Path | None = None) -> dict:
    """Metrics of a run on its own test split, or on a labelled table."""
    run = runs.load_run(run_dir)
    if data_path is None:
        frame, where = prepare(run.experiment.data).test, "test split"
    else:
        frame, where = read_table(data_path, run.encoder.roles.text_columns), str(data_path)
    prob, data, user = _score_frame(run, frame, where, need_label=True)
    metrics = evaluate(data.rows.label.numpy(), prob, data.rows.domain.numpy(), run.encoder.domains, user)
    if data_path is None and ORACLE in frame.columns:
        metrics["oracle"] = oracle_metrics(frame, data, run.encoder.domains)
    return metrics


def _writable(frame: pl.DataFrame, suffix: str) -> pl.DataFrame:
    if suffix != ".csv":
        return frame
    lists = [c for c, t in frame.schema.items() if isinstance(t, pl.List | pl.Array)]
    return frame.with_columns(pl.col(c).cast(pl.List(pl.String)).list.join("|") for c in lists)


def predict_run(run_dir: str | Path, input_path: str | Path, out: str | Path) -> pl.DataFrame:
    """Score every row of a table; writes the input columns plus ``score`` and ``domain_seen``."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise InputError(f"--out {out}: use a .parquet or .csv file name")
    run = runs.load_run(run_dir)
    frame = read_table(input_path, run.encoder.roles.text_columns)
    prob, data, _ = _score_frame(run, frame, str(input_path), need_label=False)
    seen = data.rows.domain.numpy() < len(run.encoder.domains)
    if not seen.all():
        log.warning(
            "%d rows have a domain unseen in training; they get the shared prediction", int((~seen).sum())
        )
    result = frame.drop(DOMAIN_KEY, strict=False).with_columns(
        pl.Series("score", prob.astype(np.float64)), pl.Series("domain_seen", seen)
    )
    writable = _writable(result, suffix)
    if suffix == ".csv":
        atomic_write(out, lambda tmp: writable.write_csv(tmp))
    else:
        atomic_write(out, lambda tmp: writable.write_parquet(tmp))
    return result
