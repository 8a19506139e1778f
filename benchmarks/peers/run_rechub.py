"""torch-rechub on the shared split, run inside its own virtual environment.

As its documentation shows: LabelEncoder ids, ``SparseFeature`` / ``SequenceFeature(pooling
"mean")``, ``DataGenerator(...).generate_dataloader`` (its loader indexes one sample at a time)
and ``CTRTrainer.fit`` with its own early stopping. Deviations, to keep the protocol's
settings: Adam weight decay 0 (its default is 1e-5), early-stopping patience 2 (default 10),
best weights restored also when all epochs ran (its fit keeps the last epoch's then).
The training epoch is timed by wrapping ``CTRTrainer.train_one_epoch``. torch-rechub has no
plain DNN ranking model: ``dnn`` is its ``EmbeddingLayer`` + ``MLP`` (what its DeepFM's deep
part is).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from common import (
    BATCH,
    CATEGORICAL,
    DOMAIN,
    DROPOUT,
    EMBEDDING_DIM,
    EPOCHS,
    HIDDEN,
    LABEL,
    LR,
    PATIENCE,
    SEQUENCE,
    domain_metrics,
    label_encode,
    n_params,
    parse_args,
    read_splits,
    seed_everything,
    write_result,
)
from torch_rechub.basic.features import SequenceFeature, SparseFeature
from torch_rechub.basic.layers import MLP, EmbeddingLayer
from torch_rechub.models.ranking import DeepFM
from torch_rechub.trainers import CTRTrainer
from torch_rechub.utils.data import DataGenerator


class DNN(torch.nn.Module):
    """Embeddings of every feature, concatenated, through an MLP: DeepFM's deep part alone."""

    def __init__(self, features: list, mlp_params: dict) -> None:
        super().__init__()
        self.features = features
        self.embedding = EmbeddingLayer(features)
        self.mlp = MLP(sum(f.embed_dim for f in features), **mlp_params)

    def forward(self, x: dict) -> torch.Tensor:
        return torch.sigmoid(self.mlp(self.embedding(x, self.features, squeeze_dim=True)).squeeze(1))


class TimedTrainer(CTRTrainer):
    """CTRTrainer that records the duration of each training epoch (validation excluded)."""

    def __init__(self, *args, rows: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows, self.history = rows, []

    def train_one_epoch(self, data_loader, log_interval: int = 10) -> float:
        start = time.perf_counter()
        loss = super().train_one_epoch(data_loader, log_interval)
        seconds = time.perf_counter() - start
        self.history.append(
            {
                "epoch": len(self.history) + 1,
                "seconds": seconds,
                "samples_per_s": self.rows / seconds,
            }
        )
        return loss


def main() -> None:
    args = parse_args(__doc__)
    seed_everything(args.seed, args.threads)
    start = time.perf_counter()
    arrays, vocab = label_encode(read_splits(args.data))
    features = [SparseFeature(n, vocab[n], embed_dim=EMBEDDING_DIM) for n in CATEGORICAL] + [
        SequenceFeature(
            SEQUENCE,
            vocab[SEQUENCE],
            embed_dim=EMBEDDING_DIM,
            pooling="mean",
            padding_idx=0,
        )
    ]
    names = [f.name for f in features]
    x = {s: {n: arrays[s][n] for n in names} for s in arrays}
    train, valid, test = DataGenerator(x["train"], arrays["train"][LABEL]).generate_dataloader(
        x_val=x["valid"],
        y_val=arrays["valid"][LABEL],
        x_test=x["test"],
        y_test=arrays["test"][LABEL],
        batch_size=BATCH,
    )
    preprocess_s = time.perf_counter() - start

    mlp = {"dims": list(HIDDEN), "dropout": DROPOUT, "activation": "relu"}
    model = DeepFM(features, features, mlp) if args.model == "deepfm" else DNN(features, mlp)
    args.work.mkdir(parents=True, exist_ok=True)
    trainer = TimedTrainer(
        model,
        optimizer_params={"lr": LR, "weight_decay": 0.0},
        n_epoch=min(EPOCHS, args.max_epochs),
        earlystop_patience=PATIENCE,
        device="cpu",
        model_path=str(args.work),
        rows=len(arrays["train"][LABEL]),
    )
    trainer.fit(train, valid)
    if trainer.early_stopper.best_weights is not None:  # fit keeps the last epoch when it never stopped
        model.load_state_dict(trainer.early_stopper.best_weights)
    prob = np.asarray(trainer.predict(model, test), dtype=np.float64).reshape(-1)
    metrics = domain_metrics(arrays["test"][LABEL], prob, arrays["test"][DOMAIN])
    write_result(args, "torch-rechub", metrics, trainer.history, preprocess_s, n_params(model))


if __name__ == "__main__":
    main()
