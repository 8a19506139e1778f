"""Feature ranking benchmark: rank synthetic's features (OutRank-style), then train with all of
them and without the bottom-ranked ones; the planted noise should rank last and dropping it
should cost no AUC.

    python benchmarks/features.py [--rows 1000000] [--drop 2] [--seeds 3] [--threads 2]

Writes ``results/features.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mdctr.config import parse_experiment
from mdctr.data.synthetic import SCHEMA
from mdctr.data.table import prepare
from mdctr.features import rank_features
from mdctr.pipeline import train_experiment

RESULTS = Path(__file__).parent / "results"


def train(rows: int, features: tuple, seed: int) -> dict:
    tree = {
        "name": "features",
        "data": {"task": "synthetic", "rows": rows, "features": [f.model_dump() for f in features]},
        "train": {"seed": seed},
    }
    with tempfile.TemporaryDirectory() as tmp:
        result = train_experiment(parse_experiment(tree), Path(tmp) / "run")
    return {"auc": result.metrics["overall"]["auc"], "wauc": result.metrics["wauc"], "params": result.params}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--drop", type=int, default=2, help="how many bottom-ranked features to drop")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = prepare(parse_experiment({"name": "rank", "data": {"task": "synthetic", "rows": args.rows}}).data)
    start = time.perf_counter()
    ranking = rank_features(data.train, data.schema)
    rank_s = time.perf_counter() - start
    order = [f.name for f in ranking.features if f.name != "domain"]
    dropped = order[-args.drop :]
    kept = tuple(f for f in SCHEMA.features if f.name not in dropped)
    runs: dict[str, list[dict]] = {"all": [], "kept": []}
    for seed in range(2024, 2024 + args.seeds):
        runs["all"].append(train(args.rows, SCHEMA.features, seed))
        runs["kept"].append(train(args.rows, kept, seed))
        print(seed, runs["all"][-1], runs["kept"][-1], flush=True)
    summary = {
        k: {m: (float(np.mean([r[m] for r in v])), float(np.std([r[m] for r in v]))) for m in ("auc", "wauc")}
        for k, v in runs.items()
    }
    result = {
        "rows": args.rows,
        "rank_seconds": rank_s,
        "ranking": ranking.to_dict()["features"],
        "dropped": dropped,
        "runs": runs,
        "summary": summary,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "features.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Feature ranking benchmark",
        "",
        f"synthetic, {args.rows:,} rows ({ranking.rows:,} training rows ranked in {rank_s:.1f} s), "
        f"{args.seeds} seeds, DNN defaults. Command: `python benchmarks/features.py --rows {args.rows}`.",
        "",
        "| rank | feature | values | MI | chance MI | score |",
        "|---|---|---|---|---|---|",
        *(
            f"| {i} | {f.name} | {f.cardinality:,} | {f.mi:.5f} | {f.noise_mi:.5f} | {f.score:.5f} |"
            for i, f in enumerate(ranking.features, 1)
        ),
        "",
        "| features | test AUC | WAUC | params |",
        "|---|---|---|---|",
        *(
            f"| {'all' if k == 'all' else 'without ' + ', '.join(dropped)} | {summary[k]['auc'][0]:.4f} ± "
            f"{summary[k]['auc'][1]:.4f} | {summary[k]['wauc'][0]:.4f} ± {summary[k]['wauc'][1]:.4f} | "
            f"{runs[k][0]['params']:,} |"
            for k in ("all", "kept")
        ),
        "",
    ]
    (RESULTS / "features.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
