"""Big embedding tables: a 10M-row unified (hashed) table against a 100k-row one, with sparse
gradients and row-wise optimizers against dense Adam.

    python benchmarks/sparse_tables.py [--rows 500000] [--threads 2] [--repeat 2]

The synthetic task (in memory), DNN (benchmark settings), every categorical feature in one
unified table of ``buckets`` rows; one epoch per run: training samples/s of the epoch and test
AUC. The rows of ``results/sparse-tables.{json,md}``: 100k buckets with the default (dense Adam:
below ``train.sparse.min_rows``), 10M buckets with each sparse optimizer, and 10M with dense Adam
(``train.sparse.min_rows: null``) for contrast. Runs alternate over ``--repeat`` rounds, each
figure the median. Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from mdctr.config import parse_experiment
from mdctr.data.cache import atomic_write_text
from mdctr.pipeline import train_experiment

RESULTS = Path(__file__).parent / "results"

RUNS = {
    "100k, dense Adam (default)": (100_000, {}),
    "10M, rowwise_adagrad (default)": (10_000_000, {}),
    "10M, rowwise_adagrad lr 0.01": (10_000_000, {"optimizer": "rowwise_adagrad", "lr": 0.01}),
    "10M, sparse_adam": (10_000_000, {"optimizer": "sparse_adam"}),
    "10M, dense Adam": (10_000_000, {"min_rows": None}),
}


def run(rows: int, buckets: int, sparse: dict, threads: int) -> dict:
    tree = {
        "name": "sparse-tables",
        "data": {"task": "synthetic", "rows": rows},
        "model": {"embedding": {"kind": "unified", "buckets": buckets}},
        "train": {"epochs": 1, "threads": threads, "sparse": sparse},
    }
    with tempfile.TemporaryDirectory() as tmp:
        result = train_experiment(parse_experiment(tree), Path(tmp) / "run")
    return {
        "samples_per_s": result.state.history[0]["samples_per_s"],
        "auc": result.metrics["overall"]["auc"],
        "params": result.params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records: dict[str, list[dict]] = {name: [] for name in RUNS}
    for _ in range(args.repeat):
        for name, (buckets, sparse) in RUNS.items():
            records[name].append(run(args.rows, buckets, sparse, args.threads))
            print(name, records[name][-1], flush=True)
    rows = [
        {
            "run": name,
            "buckets": RUNS[name][0],
            "samples_per_s": float(np.median([r["samples_per_s"] for r in runs])),
            "auc": float(np.median([r["auc"] for r in runs])),
            "params": runs[0]["params"],
        }
        for name, runs in records.items()
    ]
    base = rows[0]["samples_per_s"]
    lines = [
        "# Big embedding tables: sparse gradients and row-wise optimizers",
        "",
        f"Synthetic task ({args.rows:,} rows, 60 % train), DNN, all categorical features in one unified table; "
        f"one epoch per run, {args.threads} threads, median of {args.repeat} alternating rounds. "
        "Command: `python benchmarks/sparse_tables.py`.",
        "",
        "| run | table rows | parameters | samples/s | x 100k-row table | test AUC (1 epoch) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['run']} | {r['buckets']:,} | {r['params']:,} | {r['samples_per_s']:,.0f} | "
        f"{r['samples_per_s'] / base:.2f} | {r['auc']:.4f} |"
        for r in rows
    ]
    lines += ["", "Target: the 10M-row table at >= 0.5x the step rate of the 100k-row table."]
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(
        RESULTS / "sparse-tables.json", json.dumps({"rows": rows, "runs": records}, indent=2) + "\n"
    )
    atomic_write_text(RESULTS / "sparse-tables.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
