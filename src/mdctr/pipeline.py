"""The user's path as library calls: train an experiment into a run directory, evaluate
a run, score a table with a run. The CLI is a thin shell over these."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from mdctr import distributed, layout, runs
from mdctr.config import DataConfig, Experiment
from mdctr.data.cache import (
    atomic_write,
    atomic_write_text,
    first_existing,
    make_dir,
    remove_partial_writes,
)
from mdctr.data.encode import Encoder
from mdctr.data.loader import TensorData
from mdctr.data.stream import SPLITS, ParquetStream, open_splits, streams
from mdctr.data.table import prepare, read_table, schema_of
from mdctr.errors import InputError
from mdctr.grow import grow_state, grown, row_maps
from mdctr.metrics import evaluate
from mdctr.models.ctnet import CTNet
from mdctr.models.protocols import adapter_parameters
from mdctr.nn.embedding import FieldEmbedding
from mdctr.registry import build_model
from mdctr.report import markdown, plot_curves, plot_domains
from mdctr.train import Scores, Source, Trainer, TrainState, WarmStart, gather_scores, predict, score

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


def _check_writable(out: Path) -> None:
    """--out can become a folder this process writes in (checked before any data is read)."""
    ancestor = first_existing(out)
    if not ancestor.is_dir():
        raise InputError(f"--out {out}: {ancestor} is a file, not a folder; choose another --out")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: no permission to write in {ancestor}; choose another --out")


def _claim_run_dir(
    out: Path, experiment: Experiment, resume: bool, overwrite: bool, writer: bool = True
) -> bool:
    """Check that training may write ``out``; whether it continues from a checkpoint there.

    ``resume`` continues from the checkpoint, or, where a run was killed before its first
    checkpoint (or never started), starts it from the beginning in the same folder. Only the
    ``writer`` removes what a killed run left half-written.
    """
    _check_writable(out)
    holds_files = out.exists() and any(out.iterdir())
    if not resume:
        if holds_files and not overwrite:
            raise InputError(
                f"{out} already holds files; choose another --out, add --overwrite, "
                f"or --resume an interrupted run"
            )
        return False
    if (out / layout.CONFIG).is_file():
        saved = runs.read_config(out)
        if saved.model_dump(exclude={"name"}) != experiment.model_dump(exclude={"name"}):
            raise InputError(
                f"the config differs from {out / layout.CONFIG}; resume with the same config "
                f"and --set values, or train into a new --out"
            )
        if (out / layout.CHECKPOINT).is_file():
            removed = remove_partial_writes(out) if writer else 0
            if removed:
                log.info("removed %d partial files a killed run left in %s", removed, out)
            return True
    elif holds_files:
        raise InputError(f"{out} holds files but no run ({layout.CONFIG}); choose another --out")
    log.warning("%s holds no checkpoint to resume from: training from the beginning", out)
    return False


def train_experiment(
    experiment: Experiment,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    callbacks: Sequence[Callable[[TrainState], None]] = (),
    init: str | Path | None = None,
    source: str | Path | None = None,
) -> TrainResult:
    """Check and encode the data, train, evaluate on the test split and write the run directory.

    Nothing is written before the data and config have been checked. Seeded by
    ``train.seed`` inside (torch's generator is restored afterwards): the same seed gives the
    same run. ``init``: a parent run to continue from (an incremental update): its vocabularies
    grow by the new data's values, its weights and optimizer state carry over, and the run
    records its lineage; the parent is only read. ``source``: for ``model.transfer: ctnet``, the
    run whose model becomes the frozen source tower (the parent, if any, gives the target tower).

    Under a launcher (``torchrun``, ``mdctr train --nproc``) every process calls this: each
    trains on its shard of the rows, the metrics cover every row, and rank 0 alone writes ``out``
    (which ``resume`` needs on a filesystem every process sees).
    """
    out = Path(out)
    world = distributed.world()
    parent, source_run = _related(experiment, out, init, source)
    resume = _claim_run_dir(out, experiment, resume, overwrite, writer=world.main)
    distributed.barrier(world)  # every rank has looked at ``out`` before rank 0 writes there
    start = time.perf_counter()
    base = None  # what the new data's values and domains are added to
    if source_run is not None:  # a CTNet: the source's encoding, with the target's values too
        base = source_run.encoder.extended(parent.encoder) if parent is not None else source_run.encoder
    elif parent is not None:
        base = parent.encoder
    encoder, train, valid, test = _sources(
        experiment.data, out / layout.VOCAB if resume else None, base if not resume else None
    )
    if world.size > 1:
        train, valid, test = (s.shard(world.rank, world.size) for s in (train, valid, test))
    preprocess_s = time.perf_counter() - start
    log.info(
        "data: %d train, %d valid, %d test rows, %d domains, %s in %.1f s",
        len(train),
        len(valid),
        len(test),
        len(encoder.domains),
        "streamed: vocabularies fitted" if isinstance(train, ParquetStream) else "encoded",
        preprocess_s,
    )
    seed = experiment.train.seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(encoder.input_spec(), experiment.model)
        params = sum(p.numel() for p in model.parameters())
        model.to(world.device)
        trainer = Trainer(
            model, experiment.train, out, progress=progress and world.main, callbacks=callbacks, world=world
        )
        warm = _warm_start(model, encoder, parent, source_run) if base is not None and not resume else None
        if not resume:
            if world.main:
                if out.exists():  # --overwrite, or --resume of a run killed before its first checkpoint
                    shutil.rmtree(out)
                make_dir(out)
                runs.write_config(out, experiment)
                encoder.save(out / layout.VOCAB)
            torch.manual_seed(seed + 7919 * world.rank)  # training draws (dropout) from the seed, per rank
        state = trainer.fit(train, valid, resume=resume, warm=warm)

    scores = gather_scores(score(model, test, experiment.train.eval_batch_size), world)
    metrics = metrics_of(scores, encoder)
    rates = [h["samples_per_s"] for h in state.history]
    info = {
        **runs.provenance(experiment),
        "params": params,
        "preprocess_s": round(preprocess_s, 3),
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch,
        "train_samples_per_s": round(float(np.median(rates)), 1) if rates else None,
        "train_s": round(sum(h["seconds"] for h in state.history), 3),
    }
    if parent is not None:
        info |= _lineage(parent, encoder)
    if source_run is not None:
        info["source"] = _link(source_run)
    if world.size > 1:
        info["distributed"] = {"processes": world.size, "backend": world.backend, "device": str(world.device)}
    adapters = sum(p.numel() for p in adapter_parameters(model))
    if not world.main:
        return TrainResult(out, metrics, state, preprocess_s, params, adapters)
    _write_results(out, experiment.name, metrics, state.history, info)
    selection = selected_features(model, encoder)
    if selection is not None:
        runs.write_json(out / layout.SELECTION, selection)
    runs.write_checksums(out)
    return TrainResult(out, metrics, state, preprocess_s, params, adapters)


def _same_columns(experiment: Experiment, run: runs.Run, option: str) -> None:
    new, old = schema_of(experiment.data), run.encoder.schema
    for what, a, b in (
        ("data.label", new.labels, old.labels),
        ("data.domain", new.domain, old.domain),
        ("data.features", new.features, old.features),
    ):
        if a != b:
            shown = (lambda x: [f.name for f in x]) if what == "data.features" else list
            raise InputError(
                f"{what} {shown(a)} differs from the {option} run's {shown(b)} ({run.path / layout.VOCAB}); "
                f"an update reads the same columns as its parent"
            )


def _related(
    experiment: Experiment, out: Path, init: str | Path | None, source: str | Path | None
) -> tuple[runs.Run | None, runs.Run | None]:
    """The runs an update continues from (``--init``) and transfers from (``--source``),
    checked against the update's config; each is only read."""
    model = experiment.model
    ctnet = model.transfer == "ctnet"
    if ctnet != (source is not None):
        raise InputError(
            "model.transfer: ctnet needs --source RUN (the run whose model becomes the frozen source tower)"
            if ctnet
            else "--source is for model.transfer: ctnet; set it, or leave --source out"
        )
    found: list[runs.Run | None] = []
    for path, option in ((init, "--init"), (source, "--source")):
        if path is None:
            found.append(None)
            continue
        if out.resolve() == Path(path).resolve():
            raise InputError(
                f"--out {out} is the {option} run; an update writes a new run and leaves it as it is"
            )
        run = runs.load_run(path)
        # a plain run may become the target (or be the source) of a CTNet: compare the towers
        expected = model.model_copy(update={"transfer": "none"}) if option == "--source" else model
        if run.experiment.model not in (expected, model.model_copy(update={"transfer": "none"})):
            raise InputError(
                f"the model section differs from {Path(path) / layout.CONFIG}; an update keeps its "
                f"{option} run's model (train.* may change), or train a new run without {option}"
            )
        _same_columns(experiment, run, option)
        found.append(run)
    parent, source_run = found
    if parent is not None and source_run is not None and not source_run.encoder.fits(parent.encoder):
        raise InputError(
            f"{parent.path} and {source_run.path} encode differently (numeric scalers, or domains in "
            f"another order); a CTNet target must come from the source's lineage (e.g. start it from an "
            f"earlier source run)"
        )
    return parent, source_run


def _warm_start(
    model: torch.nn.Module, encoder: Encoder, parent: runs.Run | None, source: runs.Run | None
) -> WarmStart:
    """Load the parent's (and for a CTNet the source's) weights into the grown model; how the
    parent's optimizer state grows alike."""
    try:
        if isinstance(model, CTNet):
            assert source is not None
            grow_state(source.model.state_dict(), model.source, source.encoder, encoder)
            if parent is None:
                return WarmStart(None)
            tower = parent.model.target if isinstance(parent.model, CTNet) else parent.model
            grow_state(tower.state_dict(), model.target, parent.encoder, encoder)
            if isinstance(parent.model, CTNet):
                model.adapters.load_state_dict(parent.model.adapters.state_dict())
        else:
            assert parent is not None
            grow_state(parent.model.state_dict(), model, parent.encoder, encoder)
        maps = row_maps(model, parent.encoder, encoder)
    except ValueError as err:
        raise InputError(f"cannot continue {parent.path if parent else source.path}: {err}") from None
    return WarmStart(parent.path / layout.CHECKPOINT, lambda key, old, new: grown(key, old, new, maps))


def _link(run: runs.Run) -> dict:
    return {
        "run": str(run.path.resolve()),
        "name": run.experiment.name,
        "model_sha256": run.checksums[layout.BEST],
    }


def _lineage(parent: runs.Run, encoder: Encoder) -> dict:
    """run.json's record of where an update came from: the parent, its own ancestors, what grew."""
    info_path = parent.path / layout.INFO
    ancestors = json.loads(info_path.read_text()).get("lineage", []) if info_path.is_file() else []
    link, old = _link(parent), parent.encoder
    return {
        "parent": link,
        "lineage": [*ancestors, link],
        "grown": {
            "values": {k: len(v) - len(old.vocabs[k]) for k, v in encoder.vocabs.items()},
            "domains": encoder.domains[len(old.domains) :],
        },
    }


def _sources(
    cfg: DataConfig, vocab: Path | None, parent: Encoder | None = None
) -> tuple[Encoder, Source, Source, Source]:
    """The fitted (or, resuming, saved) encoder and the train, valid and test rows: encoded in
    memory, or parquet streams (``data.streaming``). With a ``parent`` encoder, the fitted one
    only adds to the parent's vocabularies and domains."""

    def encoder_for(fit: Callable[[], Encoder]) -> Encoder:
        if vocab is not None:
            return Encoder.load(vocab)
        fitted = fit()
        if cfg.keep is not None:
            fitted = fitted.restricted(read_selection(cfg.keep))
        return parent.extended(fitted) if parent is not None else fitted

    if streams(cfg):
        splits = open_splits(cfg, schema_of(cfg))
        where = str(cfg.path)
        encoder = encoder_for(
            lambda: Encoder.fit(splits.scan("train"), splits.schema, streaming=True, where=where)
        )
        return encoder, *(splits.source(s, encoder, cfg.shuffle_buffer) for s in SPLITS)
    data = prepare(cfg)
    encoder = encoder_for(lambda: Encoder.fit(data.train, data.schema, where=str(cfg.path or cfg.task)))
    return encoder, *(TensorData(encoder.transform(getattr(data, s))) for s in SPLITS)


def metrics_of(scores: Scores, encoder: Encoder) -> dict:
    """The metrics.json of scored rows: the main task's metrics; with several labels, every
    task's under ``tasks``; with an oracle column, the oracle's AUC (the ceiling) under ``oracle``."""
    names, labels = encoder.domains, encoder.schema.labels
    prob = scores.prob.reshape(len(scores.domain), -1)
    per_task = [
        evaluate(scores.labels[:, t], prob[:, t], scores.domain, names, scores.user)
        for t in range(len(labels))
    ]
    metrics = dict(per_task[0])
    if len(labels) > 1:
        metrics["tasks"] = dict(zip(labels, per_task, strict=True))
    if scores.oracle is not None:
        truth = evaluate(scores.label, scores.oracle, scores.domain, names)
        metrics["oracle"] = {
            "auc": truth["overall"]["auc"],
            "mean_auc": truth["mean_auc"],
            "wauc": truth["wauc"],
            "domains": {name: d["auc"] for name, d in truth["domains"].items()},
        }
    return metrics


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
        vocab = encoder.vocabs[encoder.schema.feature(name).vocabulary]
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


def _write_results(out: Path, title: str, metrics: dict, history: list[dict], info: dict) -> None:
    runs.write_json(out / layout.METRICS, metrics)
    runs.write_json(out / layout.HISTORY, history)
    runs.write_json(out / layout.INFO, info)
    atomic_write_text(out / layout.REPORT, markdown(metrics, title, history))
    plot_domains(metrics, str(out / layout.DOMAIN_PLOT))
    if history:
        plot_curves(history, str(out / layout.CURVES_PLOT))


def evaluate_run(run_dir: str | Path, data_path: str | Path | None = None) -> dict:
    """Metrics of a run on its own test split, or on a labelled table."""
    run = runs.load_run(run_dir)
    cfg, schema, size = run.experiment.data, run.encoder.schema, run.experiment.train.eval_batch_size
    if data_path is None and streams(cfg):
        test = open_splits(cfg, schema, ["test"]).source("test", run.encoder, cfg.shuffle_buffer)
        return metrics_of(score(run.model, test, size), run.encoder)
    if data_path is None:
        frame, where = prepare(cfg).test, "test split"
    else:
        frame, where = read_table(data_path, schema.id_columns), str(data_path)
    encoded = run.encoder.encode_table(frame, where, need_label=True)
    return metrics_of(score(run.model, encoded, size), run.encoder)


def _writable(frame: pl.DataFrame, suffix: str) -> pl.DataFrame:
    if suffix != ".csv":
        return frame
    lists = [c for c, t in frame.schema.items() if isinstance(t, pl.List | pl.Array)]
    return frame.with_columns(pl.col(c).cast(pl.List(pl.String)).list.join("|") for c in lists)


def predict_run(run_dir: str | Path, input_path: str | Path, out: str | Path) -> pl.DataFrame:
    """Score every row of a table; writes the input columns plus ``score`` (``score_<label>``
    per task for a multi-task run) and ``domain_seen``."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise InputError(f"--out {out}: use a .parquet or .csv file name")
    run = runs.load_run(run_dir)
    labels = run.encoder.schema.labels
    added = ["score"] if len(labels) == 1 else [f"score_{t}" for t in labels]
    frame = read_table(input_path, run.encoder.schema.id_columns)
    taken = next((c for c in [*added, "domain_seen"] if c in frame.columns), None)
    if taken is not None:
        raise InputError(f"{input_path}: it already has a column {taken!r}, which predict adds; rename it")
    encoded = run.encoder.encode_table(frame, str(input_path), need_label=False)
    prob = predict(run.model, encoded, run.experiment.train.eval_batch_size)
    seen = encoded.domain < len(run.encoder.domains)
    if not seen.all():
        log.warning(
            "%d rows have a domain unseen in training; they get the shared prediction", int((~seen).sum())
        )
    prob = prob.reshape(len(seen), -1).astype(np.float64)
    scores = [pl.Series(name, prob[:, i]) for i, name in enumerate(added)]
    result = frame.with_columns(*scores, pl.Series("domain_seen", seen))
    writable = _writable(result, suffix)
    if suffix == ".csv":
        atomic_write(out, lambda tmp: writable.write_csv(tmp))
    else:
        atomic_write(out, lambda tmp: writable.write_parquet(tmp))
    return result
