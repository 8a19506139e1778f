"""What every peer script shares: the protocol's settings, the split's columns, the training
loop with early stopping (for peers whose own fit has none we can use), and the result record.

Imported by scripts that run inside each peer's own virtual environment, so it needs only
the standard library, numpy, scikit-learn and torch (every peer installs those).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import log_loss, roc_auc_score

# BENCHMARKS.md: Adam, lr 1e-3, batch 1024, DNN [256, 128, 64], dropout 0.2, early stopping
# on validation AUC with patience 2, at most 10 epochs, best weights restored; embedding dim 16.
LR, BATCH, HIDDEN, DROPOUT, PATIENCE, EPOCHS, EMBEDDING_DIM = (
    1e-3,
    1024,
    (256, 128, 64),
    0.2,
    2,
    10,
    16,
)
EMBEDDING_STD = 1e-4  # N(0, 1e-4): the peers' default N(0, 1) cost 0.012 AUC on this task
CATEGORICAL = ("user_id", "item_id", "gender", "age", "occupation", "zip_code")
SEQUENCE, SEQUENCE_LEN, SEQUENCE_SEP = "genres", 6, "|"
LABEL, DOMAIN = "label", "domain"
SPLITS = ("train", "valid", "test")


def parse_args(doc: str | None, bf16: bool = False) -> argparse.Namespace:
    """The arguments every run script takes (``--bf16`` only where the library offers it)."""
    parser = argparse.ArgumentParser(description=doc)
    if bf16:
        parser.add_argument("--bf16", action="store_true", help="train under bfloat16 autocast")
    parser.add_argument("--data", type=Path, required=True, help="folder with train/valid/test.csv")
    parser.add_argument("--model", choices=("dnn", "deepfm"), required=True)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="result JSON")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for this run")
    parser.add_argument("--max-epochs", type=int, default=EPOCHS)
    return parser.parse_args()


def seed_everything(seed: int, threads: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def domain_metrics(label: np.ndarray, prob: np.ndarray, domain: np.ndarray) -> dict:
    """Overall AUC and logloss, per-domain AUC, and their test-count-weighted mean (WAUC)."""
    prob = np.clip(prob.astype(np.float64), 1e-7, 1 - 1e-7)
    per_domain, counts = {}, {}
    for name in sorted(set(domain.tolist())):
        rows = domain == name
        per_domain[str(name)] = float(roc_auc_score(label[rows], prob[rows]))
        counts[str(name)] = int(rows.sum())
    total = sum(counts.values())
    return {
        "auc": float(roc_auc_score(label, prob)),
        "logloss": float(log_loss(label, prob)),
        "domain_auc": per_domain,
        "wauc": sum(per_domain[d] * counts[d] for d in per_domain) / total,
    }


def early_stopping(
    model: torch.nn.Module,
    train_epoch: Callable[[], int],
    valid_auc: Callable[[], float],
    max_epochs: int,
) -> list[dict]:
    """Epochs of ``train_epoch`` (returns rows trained) until validation AUC has not improved
    for PATIENCE epochs; the best epoch's weights are restored. Each record times the training
    epoch alone (validation excluded)."""
    history, best, bad, best_state = [], -1.0, 0, None
    for epoch in range(max_epochs):
        start = time.perf_counter()
        rows = train_epoch()
        seconds = time.perf_counter() - start
        auc = valid_auc()
        history.append(
            {
                "epoch": epoch + 1,
                "seconds": seconds,
                "samples_per_s": rows / seconds,
                "valid_auc": auc,
            }
        )
        if auc > best:
            best, bad, best_state = (
                auc,
                0,
                {k: v.clone() for k, v in model.state_dict().items()},
            )
        else:
            bad += 1
            if bad >= PATIENCE:
                break
    model.load_state_dict(best_state)
    return history


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def epoch_rate(history: list[dict]) -> float:
    """Training samples/s over full epochs after warm-up: the median of epochs 2.. (epoch 1
    alone when only one ran)."""
    rates = [h["samples_per_s"] for h in history]
    return float(np.median(rates[1:] if len(rates) > 1 else rates))


def write_result(
    args: argparse.Namespace,
    library: str,
    metrics: dict,
    history: list[dict],
    preprocess_s: float,
    params: int,
) -> None:
    """The run's record (``metrics`` as ``domain_metrics`` gives them), written atomically."""
    record = {
        "library": library,
        "model": args.model,
        "seed": args.seed,
        **metrics,
        "epochs": len(history),
        "samples_per_s": epoch_rate(history),
        "preprocess_s": preprocess_s,
        "params": params,
        "history": history,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    path = args.out
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)


def read_splits(data: Path) -> dict:
    """The three split CSVs as pandas frames (peers read their input with pandas)."""
    import pandas as pd

    dtypes = {c: str for c in (*CATEGORICAL, SEQUENCE, DOMAIN)}
    return {s: pd.read_csv(data / f"{s}.csv", dtype=dtypes, keep_default_na=False) for s in SPLITS}


def label_encode(
    frames: dict,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, int]]:
    """The encoding the DeepCTR-Torch and torch-rechub examples show (neither ships a
    pipeline): scikit-learn's LabelEncoder per categorical column over all rows (ids from 1),
    the list column split, mapped through one dictionary (0 = padding) and post-padded.

    Returns arrays per split and column, and each column's vocabulary size (padding included).
    """
    import pandas as pd
    from sklearn.preprocessing import LabelEncoder

    sizes = [len(frames[s]) for s in SPLITS]
    edges = np.cumsum([0, *sizes])
    everything = pd.concat([frames[s] for s in SPLITS], ignore_index=True)
    columns, vocab = {}, {}
    for name in CATEGORICAL:
        columns[name] = LabelEncoder().fit_transform(everything[name]).astype(np.int64) + 1
        vocab[name] = int(columns[name].max()) + 1
    lists = everything[SEQUENCE].str.split(SEQUENCE_SEP)
    index: dict[str, int] = {}
    padded = np.zeros((len(everything), SEQUENCE_LEN), dtype=np.int64)
    for row, tokens in enumerate(lists):
        ids = [index.setdefault(t, len(index) + 1) for t in tokens][:SEQUENCE_LEN]
        padded[row, : len(ids)] = ids
    columns[SEQUENCE], vocab[SEQUENCE] = padded, len(index) + 1
    label = everything[LABEL].to_numpy(np.float32)
    out = {}
    for i, split in enumerate(SPLITS):
        rows = slice(edges[i], edges[i + 1])
        out[split] = {name: values[rows] for name, values in columns.items()}
        out[split][LABEL] = label[rows]
        out[split][DOMAIN] = frames[split][DOMAIN].to_numpy()
    return out, vocab
