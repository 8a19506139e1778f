"""Foundation benchmark: the shared backbones on the MovieLens tasks, several seeds.

    python benchmarks/foundation.py --tasks ml100k-gender ml1m-gender --models dnn deepfm --seeds 3

Writes benchmarks/results/foundation.md and foundation.json: test AUC overall and per domain,
mean AUC, WAUC, GAUC as mean ± std over seeds, training samples/s (median epoch) and
preprocessing seconds, with the torch thread count stated.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from mdctr.config import parse_experiment
from mdctr.metrics import headline
from mdctr.pipeline import train_experiment

RESULTS = Path(__file__).parent / "results"


def run_one(task: str, model: str, seed: int) -> dict:
    exp = parse_experiment(
        {
            "name": f"{task}-{model}",
            "data": {"task": task},
            "model": {"backbone": model},
            "train": {"seed": seed},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = train_experiment(exp, Path(tmp) / "run")
    m = result.metrics
    rates = [h["samples_per_s"] for h in result.state.history]
    return {
        **headline(m),
        "samples_per_s": float(np.median(rates)),
        "preprocess_s": result.preprocess_s,
        "epochs": result.state.epoch,
        "best_epoch": result.state.best_epoch,
        "params": result.params,
    }


def summarise(task: str, model: str, runs: list[dict]) -> dict:
    def stat(values: list[float]) -> tuple[float, float]:
        return float(np.mean(values)), float(np.std(values))

    row: dict = {
        "task": task,
        "model": model,
        "backbone": model,
        "seeds": len(runs),
        "params": runs[0]["params"],
    }
    for key in ("auc", "logloss", "mean_auc", "wauc", "gauc", "samples_per_s", "preprocess_s", "epochs"):
        row[f"{key}_mean"], row[f"{key}_std"] = stat([r[key] for r in runs])
    row["domains"] = {d: stat([r["domains"][d] for r in runs]) for d in runs[0]["domains"]}
    row["runs"] = runs
    return row


def markdown(rows: list[dict], threads: int) -> str:
    lines = [
        "# Foundation benchmark",
        "",
        f"Test split of each task, mean ± std over seeds; torch threads = {threads}; "
        "samples/s = median training epoch. Command: `python benchmarks/foundation.py` (see its docstring).",
        "",
        "| task | model | seeds | AUC | per-domain AUC | mean AUC | WAUC | GAUC | samples/s | preprocess s | params |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        doms = ", ".join(f"{d} {m:.4f}±{s:.4f}" for d, (m, s) in r["domains"].items())
        lines.append(
            f"| {r['task']} | {r['model']} | {r['seeds']} | {r['auc_mean']:.4f} ± {r['auc_std']:.4f} | {doms} | "
            f"{r['mean_auc_mean']:.4f} | {r['wauc_mean']:.4f} ± {r['wauc_std']:.4f} | {r['gauc_mean']:.4f} | "
            f"{r['samples_per_s_mean']:,.0f} | {r['preprocess_s_mean']:.2f} | {r['params']:,} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["ml100k-gender", "ml1m-gender"])
    parser.add_argument("--models", nargs="+", default=["dnn", "deepfm"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="foundation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    rows = []
    for task in args.tasks:
        for model in args.models:
            runs = [run_one(task, model, 2024 + s) for s in range(args.seeds)]
            rows.append(summarise(task, model, runs))
            print(
                f"{task} {model}: AUC {rows[-1]['auc_mean']:.4f} ± {rows[-1]['auc_std']:.4f}, "
                f"{rows[-1]['samples_per_s_mean']:,.0f} samples/s",
                flush=True,
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(rows, args.threads))


if __name__ == "__main__":
    main()
