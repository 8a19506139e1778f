"""Add a domain to a trained MLoRA run: only the new domain's adapter (and its domain
embedding row) learns, from that domain's rows; every other domain's scores stay bit-identical."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import torch
from torch import nn

from mdctr import layout, runs
from mdctr.data.cache import make_dir
from mdctr.data.encode import Encoder
from mdctr.data.loader import TensorData
from mdctr.data.table import check_classes, check_table, domain_key, label_bounds, read_table, split
from mdctr.errors import InputError
from mdctr.grow import grow_state
from mdctr.metrics import evaluate
from mdctr.models.mlora import MLoRA
from mdctr.models.protocols import Stage
from mdctr.nn.lora import lora_layers
from mdctr.registry import build_model
from mdctr.train import Trainer, score
from mdctr.weights import save_tensors

log = logging.getLogger(__name__)

MIN_ROWS = 10  # of the new domain: a train and a validation part with both labels


def _only_row(param: nn.Parameter, row: int) -> None:
    mask = torch.zeros(param.shape[0], *([1] * (param.dim() - 1)), dtype=param.dtype)
    mask[row] = 1
    param.register_hook(lambda grad: grad * mask)


def _new_domain_stage(model: MLoRA, domain_id: int) -> Stage:
    adapters = [p for layer in lora_layers(model) for p in layer.adapter_parameters()]
    embeddings = [
        m.domain.weight
        for m in model.modules()
        if getattr(m, "domain", None) is not None and isinstance(m.domain, nn.Embedding)
    ]
    params = adapters + embeddings

    def enter() -> None:
        model.routing.enabled = True
        for layer in lora_layers(model):
            layer.reset_A(slice(domain_id, domain_id + 1))
        for p in params:
            _only_row(p, domain_id)

    return Stage("new-domain", lambda: params, enter)


def add_domain(run_dir: str | Path, domain: str, data_path: str | Path, out: str | Path) -> dict:
    """Train ``domain``'s adapter on its rows of ``data_path``; write the grown run to ``out``."""
    run = runs.load_run(run_dir)
    out = Path(out)
    if not isinstance(run.model, MLoRA):
        raise InputError(
            f"mdctr adapt needs a run trained with model.multidomain: mlora; "
            f"{run_dir} uses {run.experiment.model.multidomain}"
        )
    if domain in run.encoder.domains:
        raise InputError(f"domain {domain!r} is already in {run_dir}; adapt adds a new domain")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} already holds files; choose another --out")
    schema = run.encoder.schema
    frame = read_table(data_path, schema.id_columns)
    check_table(frame, schema, str(data_path))
    frame = frame.filter(domain_key(schema.domain) == domain)
    if frame.height < MIN_ROWS:
        raise InputError(
            f"{data_path}: need at least {MIN_ROWS} rows of domain {domain!r}; found {frame.height}"
        )
    check_classes(label_bounds(frame, schema).collect(), schema, "train", f"{data_path} (domain {domain!r})")
    encoder = Encoder(schema, run.encoder.vocabs, run.encoder.scalers, [*run.encoder.domains, domain])
    train_part, valid, rest = split(frame, schema, 0.2, 0.001, run.experiment.train.seed)
    train = TensorData(encoder.transform(pl.concat([train_part, rest])))
    encoded_valid = encoder.transform(valid)
    valid_data = TensorData(encoded_valid)

    cfg = run.experiment.train
    cfg = cfg.model_copy(
        update={"weight_decay": 0.0, "adapter": cfg.adapter.model_copy(update={"weight_decay": 0.0})}
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(encoder.input_spec(), run.experiment.model)
        grow_state(run.model.state_dict(), model, run.encoder, encoder)
        make_dir(out)
        stage = _new_domain_stage(model, len(run.encoder.domains))
        torch.manual_seed(cfg.seed)
        state = Trainer(model, cfg, out, stages=[stage]).fit(train, valid_data)
    (out / layout.CHECKPOINT).unlink(missing_ok=True)
    save_tensors(out / layout.BEST, model.state_dict())
    runs.write_config(out, run.experiment)
    encoder.save(out / layout.VOCAB)
    scores = score(model, encoded_valid)
    metrics = evaluate(scores.label, scores.main, scores.domain, encoder.domains, scores.user)
    runs.write_json(out / layout.ADAPT_METRICS, {**metrics, "history": state.history})
    runs.write_checksums(out)
    log.info("added domain %r: valid AUC %.4f after %d epochs", domain, state.best_auc, state.epoch)
    return metrics
