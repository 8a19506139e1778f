"""MLoRA's training throughput against the same backbone without adapters (issue target:
>= 0.8x), measured as alternating one-epoch runs in one process on an otherwise idle machine.

    python benchmarks/mlora_speed.py --tasks ml1m-age ml1m-gender synthetic --repeat 3

Each repeat runs the plain model and then MLoRA (mixed-domain batches, joint recipe) for one
epoch; the ratio is taken per repeat and summarised by its median, so slow drifts of the
machine cancel. Writes ``results/mlora-speed.json``; a run of some tasks keeps the others'
results there.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from multidomain import RESULTS, run_one


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["ml1m-age", "ml1m-gender", "synthetic"])
    parser.add_argument("--backbone", default="dnn")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = RESULTS / "mlora-speed.json"
    out = json.loads(path.read_text()) if path.is_file() else {"tasks": {}}
    if (out.get("threads"), out.get("backbone")) != (args.threads, args.backbone):
        out = {"threads": args.threads, "backbone": args.backbone, "tasks": {}}
    for task in args.tasks:
        rates: dict[str, list[float]] = {"none": [], "mlora": []}
        for _ in range(args.repeat):
            for name in rates:
                record = run_one(task, f"{name}@{args.backbone}", 2024, None, extra=("train.epochs=1",))
                rates[name].append(record["samples_per_s"])
        ratios = [m / n for m, n in zip(rates["mlora"], rates["none"], strict=True)]
        out["tasks"][task] = {**rates, "ratios": ratios, "median_ratio": statistics.median(ratios)}
        print(
            f"{task}: none {rates['none']}, mlora {rates['mlora']}, median ratio {statistics.median(ratios):.3f}"
        )
        path.write_text(json.dumps(out, indent=1) + "\n")  # per task: a later task's run keeps the others


if __name__ == "__main__":
    main()
