"""The speed reference: a lean hand-written PyTorch loop on pre-encoded tensors, no framework.

The splits are encoded once (with mdctr's encoder, outside the timed loop: this script is
about training speed, not preprocessing), then: one embedding table for all categorical
fields with per-field offsets, a mean-pooled ``EmbeddingBag`` for genres, the model (DNN, or
DeepFM = first-order weights + FM + the DNN), Adam, batches sliced from contiguous tensors
after one ``randperm`` per epoch, torch's own dropout. The protocol's early stopping.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import torch
from common import (
    BATCH,
    CATEGORICAL,
    DOMAIN,
    DROPOUT,
    EMBEDDING_DIM,
    EMBEDDING_STD,
    HIDDEN,
    LABEL,
    LR,
    SEQUENCE,
    SEQUENCE_LEN,
    SEQUENCE_SEP,
    SPLITS,
    domain_metrics,
    early_stopping,
    n_params,
    parse_args,
    seed_everything,
    write_result,
)
from torch import nn

from mdctr.data.encode import Encoder
from mdctr.data.schema import Feature, Schema


class Lean(nn.Module):
    def __init__(self, sizes: list[int], genres: int, deepfm: bool) -> None:
        super().__init__()
        self.register_buffer("offsets", torch.tensor(np.cumsum([0, *sizes[:-1]])))
        self.table = nn.Embedding(sum(sizes), EMBEDDING_DIM)
        self.genres = nn.EmbeddingBag(genres, EMBEDDING_DIM, mode="mean", padding_idx=0)
        fields = len(sizes) + 1
        layers, width = [], fields * EMBEDDING_DIM
        for units in HIDDEN:
            layers += [nn.Linear(width, units), nn.ReLU(), nn.Dropout(DROPOUT)]
            width = units
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))
        self.first_order = nn.Embedding(sum(sizes), 1) if deepfm else None
        for table in (self.table.weight, self.genres.weight):
            nn.init.normal_(table, std=EMBEDDING_STD)
        if self.first_order is not None:
            nn.init.zeros_(self.first_order.weight)

    def forward(self, sparse: torch.Tensor, genres: torch.Tensor) -> torch.Tensor:
        ids = sparse + self.offsets
        fields = torch.cat([self.table(ids), self.genres(genres).unsqueeze(1)], 1)
        logit = self.mlp(fields.flatten(1)).squeeze(1)
        if self.first_order is None:
            return logit
        square_of_sum = fields.sum(1).pow(2)
        sum_of_square = fields.pow(2).sum(1)
        fm = 0.5 * (square_of_sum - sum_of_square).sum(1)
        return logit + fm + self.first_order(ids).sum((1, 2))


def encode(data) -> tuple[dict, list[int], int]:
    """Every split as (sparse (N, F), genres (N, L), label (N,), domain names (N,))."""
    frames = {
        s: pl.read_csv(
            data / f"{s}.csv",
            schema_overrides={c: pl.String for c in (*CATEGORICAL, SEQUENCE, DOMAIN)},
        )
        for s in SPLITS
    }
    schema = Schema(
        labels=(LABEL,),
        domain=(DOMAIN,),
        features=(
            *(Feature(name=n) for n in CATEGORICAL),
            Feature(name=SEQUENCE, kind="sequence", max_len=SEQUENCE_LEN, sep=SEQUENCE_SEP),
        ),
    )
    encoder = Encoder.fit(frames["train"], schema)
    out = {}
    for split, frame in frames.items():
        encoded = encoder.transform(frame)
        out[split] = (
            torch.as_tensor(encoded.sparse).contiguous(),
            torch.as_tensor(encoded.sequences[0]).contiguous(),
            torch.as_tensor(encoded.labels[:, 0], dtype=torch.float32),
            frame[DOMAIN].cast(pl.String).to_numpy(),
        )
    spec = encoder.input_spec()
    return out, list(spec.categorical), spec.sequence[0]


def main() -> None:
    args = parse_args(__doc__)
    seed_everything(args.seed, args.threads)
    start = time.perf_counter()
    data, sizes, genres = encode(args.data)
    preprocess_s = time.perf_counter() - start
    model = Lean(sizes, genres, args.model == "deepfm")
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    sparse, seq, label, _ = data["train"]

    def train_epoch() -> int:
        model.train()
        order = torch.randperm(len(label))
        for begin in range(0, len(label), BATCH):
            rows = order[begin : begin + BATCH]
            loss = nn.functional.binary_cross_entropy_with_logits(model(sparse[rows], seq[rows]), label[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return len(label)

    @torch.no_grad()
    def score(split: str) -> np.ndarray:
        model.eval()
        s, q, _, _ = data[split]
        return torch.cat(
            [torch.sigmoid(model(s[i : i + 16384], q[i : i + 16384])) for i in range(0, len(s), 16384)]
        ).numpy()

    def metrics(split: str) -> dict:
        return domain_metrics(data[split][2].numpy(), score(split), data[split][3])

    history = early_stopping(model, train_epoch, lambda: metrics("valid")["auc"], args.max_epochs)
    write_result(args, "lean-pytorch", metrics("test"), history, preprocess_s, n_params(model))


if __name__ == "__main__":
    main()
