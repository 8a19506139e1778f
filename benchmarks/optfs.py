"""OptFS benchmark: search a feature set (gates per categorical value), retrain on it, compare
with the model trained on every feature.

    python benchmarks/optfs.py --task ml100k-gender --l1 0.001 0.003 --seeds 3

Writes ``results/optfs.md`` and ``.json``: test AUC of the plain model, of the search run and of
the retrained model, the kept values per feature and the parameter counts.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from mdctr.config import parse_experiment
from mdctr.layout import SELECTION
from mdctr.pipeline import train_experiment

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="ml100k-gender")
    parser.add_argument("--l1", type=float, nargs="+", default=[0.001, 0.003])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=2024, help="seeds: first-seed, first-seed + 1, ...")
    parser.add_argument(
        "--init", type=float, default=0.05, help="model.optfs.init, the gates' starting logit"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            base = {"name": "optfs", "data": {"task": args.task}, "train": {"seed": seed}}
            plain = train_experiment(parse_experiment(base), Path(tmp) / f"plain{seed}")
            for l1 in args.l1:
                search_dir = Path(tmp) / f"search{seed}-{l1}"
                tree = {**base, "model": {"optfs": {"search": True, "l1": l1, "init": args.init}}}
                search = train_experiment(parse_experiment(tree), search_dir)
                keep = {**base, "data": {**base["data"], "keep": str(search_dir / SELECTION)}}
                retrained = train_experiment(parse_experiment(keep), Path(tmp) / f"retrain{seed}-{l1}")
                kept = json.loads((search_dir / SELECTION).read_text())["kept"]
                rows.append(
                    {
                        "seed": seed,
                        "l1": l1,
                        "plain_auc": plain.metrics["overall"]["auc"],
                        "search_auc": search.metrics["overall"]["auc"],
                        "retrained_auc": retrained.metrics["overall"]["auc"],
                        "plain_params": plain.params,
                        "retrained_params": retrained.params,
                        "kept": kept,
                    }
                )
                print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "optfs.json"
    results = json.loads(path.read_text()) if path.is_file() else {"tasks": {}}
    command = (
        f"python benchmarks/optfs.py --task {args.task} --l1 {' '.join(map(str, args.l1))} --init {args.init:g} "
        f"--seeds {args.seeds} --first-seed {args.first_seed} --threads {args.threads}"
    )
    # one entry per task and gate init; runs of other seeds (e.g. another process's) are kept
    entry = results["tasks"].setdefault(f"{args.task}, init {args.init:g}", {"commands": [], "runs": []})
    done = {(r["seed"], r["l1"]) for r in rows}
    entry["runs"] = [r for r in entry["runs"] if (r["seed"], r["l1"]) not in done] + rows
    entry["commands"] = [c for c in entry["commands"] if c != command] + [command]
    path.write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "optfs.md").write_text(report(results["tasks"]))


def report(tasks: dict[str, dict]) -> str:
    """One table per task: AUC of the plain, search and retrained models, and what was kept."""
    lines = ["# OptFS benchmark", "", "DNN defaults otherwise; mean ± std over seeds."]
    for task, result in tasks.items():
        rows = result["runs"]
        lines += [
            "",
            f"## {task}",
            "",
            f"{len({r['seed'] for r in rows})} seeds. Commands: "
            + ", ".join(f"`{c}`" for c in result["commands"])
            + ".",
            "",
            "| l1 | plain AUC | search AUC | retrained AUC | Δ retrained - plain | values kept | params kept |",
            "|---|---|---|---|---|---|---|",
        ]
        for l1 in dict.fromkeys(r["l1"] for r in rows):
            sub = [r for r in rows if r["l1"] == l1]

            def stat(key: str, sub: list[dict] = sub) -> str:
                values = [r[key] for r in sub]
                return f"{np.mean(values):.4f} ± {np.std(values):.4f}"

            delta = [r["retrained_auc"] - r["plain_auc"] for r in sub]
            kept = np.mean(
                [sum(k for k, _ in r["kept"].values()) / sum(n for _, n in r["kept"].values()) for r in sub]
            )
            params = np.mean([r["retrained_params"] / r["plain_params"] for r in sub])
            lines.append(
                f"| {l1:g} | {stat('plain_auc')} | {stat('search_auc')} | {stat('retrained_auc')} | "
                f"{np.mean(delta):+.4f} ± {np.std(delta):.4f} | {kept:.1%} | {params:.1%} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
