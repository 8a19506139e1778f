"""The training loop: Adam, early stopping on validation AUC, best weights restored,
recipes (``joint``; ``two_stage``: the model's stages in order, each kept only if it beats
the best so far; ``adapters``: an adapted model's adapters alone, for updates), an atomic checkpoint per epoch (and every ``checkpoint_every`` steps), and
resume, mid-epoch too, to the same result."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mdctr.config import TrainConfig
from mdctr.data.batch import Batch
from mdctr.data.encode import Encoded
from mdctr.data.loader import TensorData
from mdctr.distributed import World, all_gather_rows, gather_rng, mean_over_ranks
from mdctr.errors import InputError
from mdctr.layout import BEST, CHECKPOINT
from mdctr.metrics import auc, logloss
from mdctr.models.protocols import DomainParts, Progressive, Stage, adapter_parameters, stages_for
from mdctr.nn.domain import routes_by_domain
from mdctr.objective import Objective
from mdctr.optim import Optimizers, mark_sparse, sparse_optimizer
from mdctr.weights import load_tensors, save_tensors

log = logging.getLogger(__name__)


class Source(Protocol):
    """Rows to train or evaluate on: in memory (``TensorData``) or streamed from parquet."""

    def __len__(self) -> int: ...

    def batches(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        by_domain: bool = False,
        start: int = 0,
    ) -> Iterator[Batch]: ...

    def chunks(self) -> Iterator[Encoded]: ...

    def shard(self, rank: int, ranks: int) -> Source: ...


@dataclass
class TrainState:
    """Where training stands: the stage, epochs done in it and overall, the best so far."""

    epoch: int = 0
    stage: int = 0
    stage_epoch: int = 0
    best_auc: float = -math.inf
    best_epoch: int = -1
    best_stage: str = ""
    bad_epochs: int = 0
    stopped: bool = False
    history: list[dict] = field(default_factory=list)
    domain_best: list[float] = field(default_factory=list)  # models with per-domain parts only
    domain_bad: list[int] = field(default_factory=list)
    step: int = 0  # batches done in the current epoch (a mid-epoch checkpoint)
    step_loss: float = 0.0  # their summed loss


@dataclass(frozen=True)
class WarmStart:
    """A parent run to continue from: its checkpoint (for the optimizer state) and how its
    tensors grow into this model, ``grow(name, old, new_template)``."""

    checkpoint: Path | None
    grow: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor] | None = None


@dataclass(frozen=True)
class Scores:
    """A model's probabilities for every row of a source, in order, with what evaluation needs:
    prob (N,) or (N, tasks); labels (N, tasks) or None; domain (N,); user, oracle (N,) or None."""

    prob: np.ndarray
    labels: np.ndarray | None
    domain: np.ndarray
    user: np.ndarray | None
    oracle: np.ndarray | None

    @property
    def label(self) -> np.ndarray:
        """The main task's labels (N,)."""
        return self.labels[:, 0]

    @property
    def main(self) -> np.ndarray:
        """The main task's probabilities (N,)."""
        return self.prob if self.prob.ndim == 1 else self.prob[:, 0]


def _joined(parts: list[np.ndarray | None]) -> np.ndarray | None:
    return None if not parts or parts[0] is None else np.concatenate(parts)


@torch.no_grad()
def score(model: nn.Module, data: Source | Encoded, batch_size: int = 16384) -> Scores:
    """Probabilities for every row of ``data``, chunk by chunk (a stream is never held whole)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = [data] if isinstance(data, Encoded) else data.chunks()
    probs, labels, domains, users, oracles = [], [], [], [], []
    for chunk in chunks:
        rows = TensorData(chunk)
        probs.extend(torch.sigmoid(model(b.to(device))).cpu() for b in rows.batches(batch_size))
        labels.append(chunk.labels)
        domains.append(chunk.domain)
        users.append(chunk.user)
        oracles.append(chunk.oracle)
    model.train(was_training)
    prob = torch.cat(probs).numpy() if probs else np.zeros(0, np.float32)
    return Scores(prob, _joined(labels), np.concatenate(domains), _joined(users), _joined(oracles))


def gather_scores(scores: Scores, world: World) -> Scores:
    """Every rank's scored rows, in rank order: the whole split, on every rank."""
    if world.size == 1:
        return scores
    fields = (scores.prob, scores.labels, scores.domain, scores.user, scores.oracle)
    return Scores(*(None if a is None else all_gather_rows(a, world) for a in fields))


def predict(model: nn.Module, data: Source | Encoded, batch_size: int = 16384) -> np.ndarray:
    """Click probabilities (N,) (or (N, tasks)) for every row, in order."""
    return score(model, data, batch_size).prob


def _freeze_idle_norms(model: nn.Module) -> None:
    """Batch-norm layers with no trainable parameter keep their running statistics."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()


def _domain_parts(model: nn.Module) -> dict[str, nn.Module]:
    """A model's independent per-domain parts (e.g. separate models), by state-dict prefix;
    empty for models whose domains share parameters."""
    if not isinstance(model, DomainParts):
        return {}
    names = {id(m): name for name, m in model.named_modules()}
    found = {f"{names[id(m)]}.": m for m in model.domain_parts()}
    covered = {id(p) for m in found.values() for p in m.parameters()}
    if any(id(p) not in covered for p in model.parameters()):
        raise ValueError(f"{type(model).__name__}.domain_parts() must hold every parameter")
    return found


class Trainer:
    """Fits a model returning logits to the ``Objective``; the caller seeds torch's generator.

    With a ``run_dir`` the best weights go to ``model.safetensors`` and the full state
    (weights, optimizer, RNG, progress) to ``checkpoint.safetensors`` after every epoch and,
    with ``checkpoint_every``, every that many steps.
    A model with independent per-domain parts is early-stopped per domain: each part keeps
    its own best-validation weights and stops training after ``patience`` bad epochs.
    In a ``world`` of several processes (each given its shard of the sources) the model trains
    as ``DistributedDataParallel``, validation is scored over the whole split, every rank takes
    the same decisions, and rank 0 alone writes.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        run_dir: Path | None = None,
        progress: bool = False,
        callbacks: Sequence[Callable[[TrainState], None]] = (),
        stages: Sequence[Stage] | None = None,
        world: World | None = None,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.run_dir = run_dir
        self.world = world or World()
        self._writes = run_dir is not None and self.world.main
        self.progress = progress
        self.callbacks = tuple(callbacks)
        try:
            self.stages = (
                list(stages) if stages is not None else stages_for(model, cfg.recipe, cfg.adapter.tables)
            )
        except ValueError:
            what = "adapters" if cfg.recipe == "adapters" else "training stages"
            raise InputError(
                f"train.recipe {cfg.recipe!r} needs a model with {what} (e.g. model.multidomain: "
                f"mlora); {type(model).__name__} has none, use recipe: joint"
            ) from None
        self.state = TrainState()
        self.objective = Objective(model)
        self._parts = _domain_parts(model)
        self._sorted = routes_by_domain(model)
        self._best: dict[str, torch.Tensor] | None = None
        self.optimizer: Optimizers | None = None
        self._sparse = mark_sparse(model, cfg.sparse.min_rows)
        self._net: nn.Module = model  # what training steps call: the model, or its DDP wrapper
        self._wrapped: frozenset[int] = frozenset()

    def _limits(self, stage: Stage) -> tuple[int, int]:
        if not stage.adapter:
            return self.cfg.epochs, self.cfg.patience
        return self.cfg.adapter.epochs or self.cfg.epochs, self.cfg.adapter.patience or self.cfg.patience

    def _start_stage(self, stage: Stage) -> None:
        """Make only the stage's parameters trainable and give them a fresh Adam."""
        stage.enter()
        train_ids = {id(p) for p in stage.parameters()}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in train_ids)
        adapters = {id(p) for p in adapter_parameters(self.model)}
        cfg, acfg = self.cfg, self.cfg.adapter
        sparse = [p for p in self._sparse if id(p) in train_ids]
        dense_ids = train_ids - {id(p) for p in sparse}
        groups = [
            {
                "params": [
                    p for p in self.model.parameters() if id(p) in dense_ids and id(p) not in adapters
                ],
                "lr": cfg.lr,
                "weight_decay": cfg.weight_decay,
            },
            {
                "params": [p for p in self.model.parameters() if id(p) in dense_ids and id(p) in adapters],
                "lr": acfg.lr or cfg.lr,
                "weight_decay": acfg.weight_decay,
            },
        ]
        dense = [g for g in groups if g["params"]]
        optimizers = [torch.optim.Adam(dense, fused=True)] if dense else []  # fused: one kernel for all
        if sparse:
            optimizers.append(sparse_optimizer(sparse, cfg.sparse.optimizer, cfg.sparse.lr or cfg.lr))
        self.optimizer = Optimizers(optimizers)
        self._wrap()

    def _wrap(self) -> None:
        """Several processes: (re)wrap the model in DDP over the parameters training now."""
        trained = frozenset(id(p) for p in self.model.parameters() if p.requires_grad)
        if self.world.size == 1 or trained == self._wrapped or not trained:
            return
        cuda = self.world.device.type == "cuda"
        self._net = nn.parallel.DistributedDataParallel(
            self.model,
            device_ids=[self.world.device] if cuda else None,
            find_unused_parameters=True,  # domains absent from a batch leave their parts unused
        )
        self._wrapped = trained

    def _scores(self, data: Source) -> Scores:
        return gather_scores(score(self.model, data, self.cfg.eval_batch_size), self.world)

    def fit(
        self, train: Source, valid: Source, resume: bool = False, warm: WarmStart | None = None
    ) -> TrainState:
        """Run the recipe's stages; the model ends with its best validation weights.

        ``warm``: the model holds a parent run's (grown) weights; the parent's optimizer state
        carries over (``carry_optimizer``) and, with ``keep_parent``, the starting weights compete
        for best as epoch 0, so an update never ends worse on its validation rows than its parent.
        """
        if resume:
            self._load_checkpoint()
        else:
            self._start_stage(self.stages[0])
            if warm is not None:
                if warm.checkpoint is not None and warm.grow is not None and warm.checkpoint.is_file():
                    carried = self.carry_optimizer(warm.checkpoint, warm.grow)
                    log.info("optimizer state carried over for %d parameters", carried)
                if self.cfg.keep_parent:
                    self._score_start(valid)
        while True:
            state, stage = self.state, self.stages[self.state.stage]
            epochs, _ = self._limits(stage)
            if state.stage_epoch < epochs and not state.stopped:
                self._run_epoch(train, valid, stage)
                for callback in self.callbacks:
                    callback(state)
                continue
            if state.stage + 1 == len(self.stages):
                break
            self._next_stage()
        if self._best is not None:
            self.model.load_state_dict(self._best)
        return self.state

    def _score_start(self, valid: Source) -> None:
        """The starting weights as the best so far (epoch 0)."""
        scores = self._scores(valid)
        state = self.state
        if self._parts:
            state.domain_best = [
                auc(scores.label[scores.domain == d], scores.main[scores.domain == d])
                for d in range(len(self._parts))
            ]
            state.domain_best = [-math.inf if math.isnan(a) else a for a in state.domain_best]
            state.domain_bad = [0] * len(self._parts)
        state.best_auc, state.best_epoch, state.best_stage = auc(scores.label, scores.main), 0, "start"
        self._best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        log.info("starting weights: valid AUC %.4f", state.best_auc)
        if self._writes:
            save_tensors(self.run_dir / BEST, self._best)

    def carry_optimizer(
        self, checkpoint: Path, grow: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]
    ) -> int:
        """Take the optimizer state of a parent run's checkpoint, matched by parameter name and
        grown as ``grow(name, old, new_template)`` grows the weights (new rows: zero state); the
        number of parameters that found their state. Parameters the parent's last stage did not
        train, and every parameter of a checkpoint from before mdctr 0.3, start fresh."""
        tensors, metadata = load_tensors(checkpoint)
        if "param_names" not in metadata:
            return 0
        names = json.loads(metadata["param_names"])
        slots: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, i, pid, name = key.split(".", 3)
                slots.setdefault(names[int(i)][int(pid)], {})[name] = value
        params, carried = dict(self.model.named_parameters()), 0
        for optimizer, own in zip(self.optimizer.optimizers, self._param_names(), strict=True):
            for name in own:
                if name not in slots:
                    continue
                param = params[name]
                template = {param.dim(): torch.zeros_like(param), 1: param.new_zeros(param.shape[0])}
                optimizer.state[param] = {
                    slot: value.clone() if value.dim() == 0 else grow(name, value, template[value.dim()])
                    for slot, value in slots[name].items()
                }
                carried += 1
        return carried

    def _param_names(self) -> list[list[str]]:
        """Each optimizer's parameters by state-dict name, in its state's order."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return [
            [names[id(p)] for g in o.param_groups for p in g["params"]] for o in self.optimizer.optimizers
        ]

    def _next_stage(self) -> None:
        state = self.state
        if self._best is not None:
            self.model.load_state_dict(self._best)
        state.stage += 1
        state.stage_epoch, state.bad_epochs, state.stopped = 0, 0, False
        self._start_stage(self.stages[state.stage])
        log.info("stage %d: %s", state.stage + 1, self.stages[state.stage].name)
        if self.run_dir is not None:
            self._save_checkpoint()

    def _run_epoch(self, train: Source, valid: Source, stage: Stage) -> None:
        state, cfg = self.state, self.cfg
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + state.epoch)
        self._wrap()  # per-domain parts may have stopped
        self.model.train()
        _freeze_idle_norms(self.model)
        epochs = self._limits(stage)[0]
        for module in self.model.modules():  # continuation schedules (OptFS gate temperature)
            if isinstance(module, Progressive):
                module.set_progress(state.stage_epoch / max(epochs - 1, 1))
        first = state.step
        start = time.perf_counter()
        bar = tqdm(
            train.batches(cfg.batch_size, generator, by_domain=self._sorted, start=first),
            total=math.ceil(len(train) / cfg.batch_size) - first,
            desc=f"epoch {state.epoch + 1} ({stage.name})",
            disable=None if self.progress else True,
            leave=False,
            mininterval=0.5,
        )
        bf16, device = cfg.precision == "bf16", self.world.device
        for batch in bar:
            if device.type != "cpu":
                batch = batch.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = self._net(batch)
            loss = self.objective(logits, batch.labels)
            if loss.requires_grad:  # False when every row's domain part has stopped
                self.optimizer.zero_grad(set_to_none=True)
                (loss if batch.weight == 1.0 else loss * batch.weight).backward()
                self.optimizer.step()
            state.step_loss += loss.item() * batch.weight
            state.step += 1
            if (state.step - first) % 50 == 0:
                rate = (state.step - first) * cfg.batch_size / (time.perf_counter() - start)
                bar.set_postfix(loss=f"{state.step_loss / state.step:.4f}", rows_per_s=f"{rate:,.0f}")
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and self.run_dir is not None:
                self._save_checkpoint()
        seconds = time.perf_counter() - start
        scores = self._scores(valid)
        label, domain, prob = scores.label, scores.domain, scores.main
        total, steps = mean_over_ranks(state.step_loss, self.world), state.step
        state.step, state.step_loss = 0, 0.0
        record = {
            "epoch": state.epoch + 1,
            "stage": stage.name,
            "train_loss": total / max(steps, 1),
            "valid_auc": auc(label, prob),
            "valid_logloss": logloss(label, prob),
            "samples_per_s": (len(train) - first * cfg.batch_size) / seconds,
            "seconds": seconds,
        }
        if self._parts:
            record["valid_domain_auc"] = [
                auc(label[domain == d], prob[domain == d]) for d in range(len(self._parts))
            ]
        log.info(
            "epoch %d (%s): loss %.4f, valid AUC %.4f, logloss %.4f, %.0f samples/s",
            record["epoch"],
            stage.name,
            record["train_loss"],
            record["valid_auc"],
            record["valid_logloss"],
            record["samples_per_s"],
        )
        self._update(record, stage)

    def _update(self, record: dict, stage: Stage) -> None:
        state = self.state
        state.history.append(record)
        state.epoch += 1
        state.stage_epoch += 1
        if self._parts:
            self._update_parts(record, stage)
        elif record["valid_auc"] > state.best_auc:
            state.best_auc, state.best_epoch, state.best_stage = (
                record["valid_auc"],
                record["epoch"],
                stage.name,
            )
            state.bad_epochs = 0
            self._best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            if self._writes:
                save_tensors(self.run_dir / BEST, self._best)
        else:
            state.bad_epochs += 1
        if not self._parts:
            state.stopped = state.bad_epochs >= self._limits(stage)[1]
        if self.run_dir is not None:
            self._save_checkpoint()

    def _update_parts(self, record: dict, stage: Stage) -> None:
        """Per-domain early stopping: keep each part's best weights, freeze a part when its
        domain's validation AUC has not improved for ``patience`` epochs (NaN AUC: keep the
        latest weights, never stop on it)."""
        state, patience = self.state, self._limits(stage)[1]
        if not state.domain_best:
            state.domain_best, state.domain_bad = [-math.inf] * len(self._parts), [0] * len(self._parts)
        if self._best is None:
            self._best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        weights = self.model.state_dict()
        for d, (prefix, part) in enumerate(self._parts.items()):
            value = record["valid_domain_auc"][d]
            if state.domain_bad[d] >= patience:
                continue
            if math.isnan(value) or value > state.domain_best[d]:
                state.domain_best[d] = value if not math.isnan(value) else state.domain_best[d]
                state.domain_bad[d] = 0
                self._best.update({k: v.detach().clone() for k, v in weights.items() if k.startswith(prefix)})
                state.best_epoch, state.best_stage = record["epoch"], stage.name
            else:
                state.domain_bad[d] += 1
                if state.domain_bad[d] >= patience:
                    part.requires_grad_(False)
        finite = [a for a in state.domain_best if math.isfinite(a)]
        state.best_auc = sum(finite) / len(finite) if finite else state.best_auc  # mean of the domains' bests
        state.stopped = all(bad >= patience for bad in state.domain_bad)
        if self._writes:
            save_tensors(self.run_dir / BEST, self._best)

    def _save_checkpoint(self) -> None:
        """Rank 0 writes the full state; every rank's RNG state goes in (a collective)."""
        rng = gather_rng(self.world)
        if not self._writes:
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optims = self.optimizer.state_dict()
        for i, optim in enumerate(optims):
            for pid, slots in optim["state"].items():
                tensors.update({f"optim.{i}.{pid}.{k}": torch.as_tensor(v) for k, v in slots.items()})
        tensors["rng.torch"] = rng[0]
        tensors.update({f"rng.torch.{rank}": state for rank, state in enumerate(rng[1:], 1)})
        metadata = {
            "world_size": str(self.world.size),
            "state": json.dumps(asdict(self.state)),
            "param_groups": json.dumps([o["param_groups"] for o in optims]),
            "param_names": json.dumps(self._param_names()),
        }
        save_tensors(self.run_dir / CHECKPOINT, tensors, metadata)

    def _load_checkpoint(self) -> None:
        if self.run_dir is None or not (self.run_dir / CHECKPOINT).is_file():
            raise InputError(f"nothing to resume in {self.run_dir}: no {CHECKPOINT}; start without --resume")
        tensors, metadata = load_tensors(self.run_dir / CHECKPOINT)
        size = int(metadata.get("world_size", "1"))
        if size != self.world.size:
            raise InputError(
                f"{self.run_dir / CHECKPOINT} was written by {size} training process(es), this is "
                f"{self.world.size}; resume with --nproc {size}"
            )
        self.state = TrainState(**json.loads(metadata["state"]))
        self._start_stage(self.stages[self.state.stage])
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        groups = json.loads(metadata["param_groups"])
        slots: list[dict[int, dict[str, torch.Tensor]]] = [{} for _ in groups]
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, i, pid, name = key.split(".", 3)
                slots[int(i)].setdefault(int(pid), {})[name] = value
        self.optimizer.load_state_dict(
            [{"state": s, "param_groups": g} for s, g in zip(slots, groups, strict=True)]
        )
        for optimizer in self.optimizer.optimizers:  # fused Adam walks memory: match the
            for param, state in optimizer.state.items():  # parameter's strides (MLoRA's A is transposed)
                for name, value in state.items():
                    if value.shape == param.shape and value.stride() != param.stride():
                        state[name] = torch.empty_like(param).copy_(value)
        rank = self.world.rank
        torch.set_rng_state(tensors["rng.torch" if rank == 0 else f"rng.torch.{rank}"])
        if self.state.best_epoch >= 0:
            self._best, _ = load_tensors(self.run_dir / BEST)
        patience = self._limits(self.stages[self.state.stage])[1]
        for part, bad in zip(self._parts.values(), self.state.domain_bad, strict=False):
            if bad >= patience:
                part.requires_grad_(False)
