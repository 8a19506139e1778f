"""The training loop: Adam, early stopping on validation AUC, best weights restored,
an atomic checkpoint per epoch, and resume that continues to the same result."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from mdctr.config import TrainConfig
from mdctr.data.loader import TensorData
from mdctr.errors import InputError
from mdctr.metrics import auc, logloss
from mdctr.weights import load_tensors, save_tensors

log = logging.getLogger(__name__)

BEST = "model.safetensors"
CHECKPOINT = "checkpoint.safetensors"


@dataclass
class TrainState:
    """Where training stands after ``epoch`` completed epochs."""

    epoch: int = 0
    best_auc: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped: bool = False
    history: list[dict] = field(default_factory=list)


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, batch_size: int = 16384) -> np.ndarray:
    """Click probabilities (N,) for every row, in order."""
    was_training = model.training
    model.eval()
    out = torch.cat([torch.sigmoid(model(b)) for b in data.batches(batch_size)])
    model.train(was_training)
    return out.numpy()


class Trainer:
    """Fits a model returning logits with binary cross-entropy.

    With a ``run_dir`` the best weights go to ``model.safetensors`` and the full state
    (weights, optimizer, RNG, progress) to ``checkpoint.safetensors`` after every epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        run_dir: Path | None = None,
        progress: bool = False,
        callbacks: Sequence[Callable[[TrainState], None]] = (),
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.run_dir = run_dir
        self.progress = progress
        self.callbacks = tuple(callbacks)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.state = TrainState()
        self._best: dict[str, torch.Tensor] | None = None

    def fit(self, train: TensorData, valid: TensorData, resume: bool = False) -> TrainState:
        """Train until ``epochs`` or early stop; the model ends with its best validation weights."""
        if resume:
            self._load_checkpoint()
        else:
            torch.manual_seed(self.cfg.seed)
        while self.state.epoch < self.cfg.epochs and not self.state.stopped:
            self._run_epoch(train, valid)
            for callback in self.callbacks:
                callback(self.state)
        if self._best is not None:
            self.model.load_state_dict(self._best)
        return self.state

    def _run_epoch(self, train: TensorData, valid: TensorData) -> None:
        epoch, cfg = self.state.epoch, self.cfg
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        self.model.train()
        total, steps = 0.0, 0
        start = time.perf_counter()
        n_batches = math.ceil(len(train) / cfg.batch_size)
        bar = tqdm(
            train.batches(cfg.batch_size, generator),
            total=n_batches,
            desc=f"epoch {epoch + 1}",
            disable=None if self.progress else True,
            leave=False,
            mininterval=0.5,
        )
        for batch in bar:
            loss = F.binary_cross_entropy_with_logits(self.model(batch), batch.label)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item()
            steps += 1
            if steps % 50 == 0:
                rate = steps * cfg.batch_size / (time.perf_counter() - start)
                bar.set_postfix(loss=f"{total / steps:.4f}", rows_per_s=f"{rate:,.0f}")
        seconds = time.perf_counter() - start
        prob = predict(self.model, valid, cfg.eval_batch_size)
        label = valid.rows.label.numpy()
        record = {
            "epoch": epoch + 1,
            "train_loss": total / max(steps, 1),
            "valid_auc": auc(label, prob),
            "valid_logloss": logloss(label, prob),
            "samples_per_s": len(train) / seconds,
            "seconds": seconds,
        }
        log.info(
            "epoch %d: loss %.4f, valid AUC %.4f, logloss %.4f, %.0f samples/s",
            record["epoch"],
            record["train_loss"],
            record["valid_auc"],
            record["valid_logloss"],
            record["samples_per_s"],
        )
        self._update(record)

    def _update(self, record: dict) -> None:
        state = self.state
        state.history.append(record)
        state.epoch += 1
        if record["valid_auc"] > state.best_auc:
            state.best_auc, state.best_epoch, state.bad_epochs = record["valid_auc"], record["epoch"], 0
            self._best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            if self.run_dir is not None:
                save_tensors(self.run_dir / BEST, self._best)
        else:
            state.bad_epochs += 1
        state.stopped = state.bad_epochs >= self.cfg.patience
        if self.run_dir is not None:
            self._save_checkpoint()

    def _save_checkpoint(self) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim = self.optimizer.state_dict()
        for pid, slots in optim["state"].items():
            tensors.update({f"optim.{pid}.{k}": torch.as_tensor(v) for k, v in slots.items()})
        tensors["rng.torch"] = torch.get_rng_state()
        metadata = {
            "state": json.dumps(asdict(self.state)),
            "param_groups": json.dumps(optim["param_groups"]),
        }
        save_tensors(self.run_dir / CHECKPOINT, tensors, metadata)

    def _load_checkpoint(self) -> None:
        if self.run_dir is None or not (self.run_dir / CHECKPOINT).is_file():
            raise InputError(f"nothing to resume in {self.run_dir}: no {CHECKPOINT}; start without --resume")
        tensors, metadata = load_tensors(self.run_dir / CHECKPOINT)
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                slots.setdefault(int(pid), {})[name] = value
        self.optimizer.load_state_dict({"state": slots, "param_groups": json.loads(metadata["param_groups"])})
        torch.set_rng_state(tensors["rng.torch"])
        self.state = TrainState(**json.loads(metadata["state"]))
        if self.state.best_epoch > 0:
            self._best, _ = load_tensors(self.run_dir / BEST)
