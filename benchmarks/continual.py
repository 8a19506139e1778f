"""The replay protocol for daily updates: MovieLens-1M cut by time into consecutive periods; after
each period a model is brought up to date and tested on the next period.

    python benchmarks/continual.py                    # 10 periods, 3 seeds, ml1m-gender, target F
    python benchmarks/continual.py --quick            # 4 periods, 1 seed, 1 epoch: a smoke run

Periods: ``mdctr.data.periods.assign`` (about equal row counts, equal times never split). Each
period is split once (seed 2024) into a training part (90 %) and a held-out part (10 %): the
held-out part is the validation rows of the update made on that period, and the test rows of
nobody. Period k+1, whole, tests the models made after period k.

Strategies, each a chain of mdctr runs (BENCHMARKS.md settings for every training run):

- ``full_retrain``: from scratch on the training parts of periods 0..k;
- ``finetune``: ``mdctr update`` of the previous run on period k's training part (vocabularies
  grown, weights and Adam state carried over, the parent's weights kept when no epoch beats them);
- ``adapters``: an MLoRA run (two-stage on period 0), then ``recipe: adapters`` updates: the shared
  network and embeddings stay, the domain adapters learn the new period;
- ``adapters_tables``: the same with ``train.adapter.tables``: the embedding tables learn too;
- ``ctnet``: the source is the finetune chain (all domains); the target domain's model is a CTNet
  over it (``mdctr update --source``), its target tower starting from the period-0 model, updated
  on the target domain's rows only. The target domain is scored by the CTNet, the others by the
  source. Its cost is the source's updates plus the target's.

Reported per strategy: AUC on each next period (overall, per domain), the means, WAUC, training
seconds (epochs only, and wall time of the whole update) and samples processed per period, and
forgetting: for each period j, the AUC on its held-out part of the model made after j, minus
that of the last model (positive = forgotten). Writes ``results/continual.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).parent))

from streaming import cpu_flags, matmul_probe  # noqa: E402

from mdctr.config import data_section, parse_experiment  # noqa: E402
from mdctr.data.periods import assign  # noqa: E402
from mdctr.data.tasks import TASKS  # noqa: E402
from mdctr.metrics import evaluate  # noqa: E402
from mdctr.pipeline import train_experiment  # noqa: E402
from mdctr.runs import load_run  # noqa: E402
from mdctr.train import predict  # noqa: E402

RESULTS = Path(__file__).parent / "results"
STRATEGIES = ("full_retrain", "finetune", "adapters", "adapters_tables", "ctnet")
MODEL = {"backbone": "dnn", "embedding_dim": 16, "hidden": [256, 128, 64], "dropout": 0.2}
TRAIN = {"batch_size": 1024, "lr": 0.001, "patience": 2, "epochs": 10}


def write_periods(task: str, periods: int, target: str, root: Path) -> tuple[list[dict], str]:
    """Each period's training part, held-out part and whole file (and the target domain's parts)."""
    spec = TASKS[task]
    frame = spec.load(None)
    domain = spec.schema.domain[0]
    frame = frame.with_columns(assign(frame, "timestamp", periods=periods).alias("period")).sort("timestamp")
    rng = np.random.default_rng(2024)
    frame = frame.with_columns(pl.Series("held_out", rng.random(frame.height) < 0.1))
    files = []
    for k in range(periods):
        part = frame.filter(pl.col("period") == k).drop("period")
        paths = {}
        for name, rows in (
            ("all", part),
            ("train", part.filter(~pl.col("held_out"))),
            ("hold", part.filter(pl.col("held_out"))),
        ):
            rows = rows.drop("held_out")
            paths[name] = root / f"p{k:02d}-{name}.parquet"
            rows.write_parquet(paths[name])
            paths[f"{name}-target"] = root / f"p{k:02d}-{name}-{target}.parquet"
            rows.filter(pl.col(domain) == target).write_parquet(paths[f"{name}-target"])
        start, end = part["timestamp"].min(), part["timestamp"].max()
        files.append(
            {
                "period": k,
                "rows": part.height,
                "start": start,
                "end": end,
                **{k: str(v) for k, v in paths.items()},
            }
        )
    return files, domain


def experiment(
    name: str, task: str, train: str, valid: str, test: str, seed: int, model: dict, train_cfg: dict
):
    data = {
        "path": train,
        "valid_path": valid,
        "test_path": test,
        "streaming": False,
        **data_section(TASKS[task].schema),
    }
    return parse_experiment(
        {
            "name": name,
            "data": data,
            "model": {**MODEL, **model},
            "train": {**TRAIN, "seed": seed, **train_cfg},
        }
    )


class Chain:
    """Runs one strategy period by period, timing each training run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cost: list[dict] = []

    def run(self, exp, out: Path, init: Path | None = None, source: Path | None = None) -> Path:
        start = time.perf_counter()
        result = train_experiment(exp, out, init=init, source=source)
        wall = time.perf_counter() - start
        epochs = result.state.history
        self.cost.append(
            {
                "train_s": sum(h["seconds"] for h in epochs),
                "wall_s": wall,
                "epochs": len(epochs),
                "best_epoch": result.state.best_epoch,
                "samples": len(epochs) * _rows(exp.data.path),
            }
        )
        return out


def _rows(path: str) -> int:
    return (
        pl.scan_parquet(path if not Path(path).is_dir() else f"{path}/*.parquet")
        .select(pl.len())
        .collect()
        .item()
    )


def scores(run: Path, frame: pl.DataFrame) -> np.ndarray:
    loaded = load_run(run)
    encoded = loaded.encoder.encode_table(frame, str(run), need_label=True)
    return predict(loaded.model, encoded).astype(np.float64)


def metrics(frame: pl.DataFrame, prob: np.ndarray, domain: str, names: list[str]) -> dict:
    ids = frame[domain].cast(pl.String).replace_strict(names, range(len(names))).cast(pl.Int64).to_numpy()
    user = frame["user_id"].cast(pl.String).cast(pl.Categorical).to_physical().cast(pl.Int64).to_numpy()
    result = evaluate(frame["label"].to_numpy().astype(np.float64), prob, ids, names, user)
    return {
        "auc": result["overall"]["auc"],
        "logloss": result["overall"]["logloss"],
        "wauc": result["wauc"],
        "gauc": result["gauc"],
        "domains": {d: m["auc"] for d, m in result["domains"].items()},
    }


def run_seed(
    files: list[dict], task: str, domain: str, target: str, seed: int, work: Path, quick: dict
) -> dict:
    """Every strategy's chain for one seed: per period, the next period's metrics and the cost."""
    names = sorted(pl.read_parquet(files[0]["all"])[domain].cast(pl.String).unique().to_list())
    last = len(files) - 1
    chains = {s: Chain(work / s) for s in STRATEGIES}
    made: dict[str, list[Path | tuple[Path, Path]]] = {s: [] for s in STRATEGIES}
    for k in range(last):
        f, test = files[k], files[k + 1]["all"]
        cumulative = work / f"cum-{k:02d}"
        cumulative.mkdir(parents=True, exist_ok=True)
        for j in range(k + 1):
            link = cumulative / Path(files[j]["train"]).name
            if not link.exists():
                link.symlink_to(files[j]["train"])
        out = lambda s, k=k: work / s / f"p{k:02d}"  # noqa: E731
        plain = dict(seed=seed, model={}, train_cfg=quick)
        full = chains["full_retrain"].run(
            experiment(f"full-{k}", task, str(cumulative), f["hold"], test, **plain), out("full_retrain")
        )
        made["full_retrain"].append(full)
        if k == 0:  # fine-tune starts from full retrain's period-0 run (and its cost)
            shutil.copytree(full, out("finetune"))
            chains["finetune"].cost.append(dict(chains["full_retrain"].cost[-1]))
        else:
            chains["finetune"].run(
                experiment(f"finetune-{k}", task, f["train"], f["hold"], test, **plain),
                out("finetune"),
                init=made["finetune"][-1],
            )
        for strategy, tables in (("adapters", False), ("adapters_tables", True)):  # MLoRA, then its adapters
            if k == 0 and tables:  # the same period-0 run as adapters'
                shutil.copytree(out("adapters"), out(strategy))
                chains[strategy].cost.append(dict(chains["adapters"].cost[-1]))
                continue
            recipe = {**quick, "recipe": "two_stage" if k == 0 else "adapters", "adapter": {"tables": tables}}
            chains[strategy].run(
                experiment(
                    f"{strategy}-{k}",
                    task,
                    f["train"],
                    f["hold"],
                    test,
                    seed,
                    {"multidomain": "mlora"},
                    recipe,
                ),
                out(strategy),
                init=made[strategy][-1] if k else None,
            )
        made["finetune"].append(out("finetune"))
        made["adapters"].append(out("adapters"))
        made["adapters_tables"].append(out("adapters_tables"))
        # CTNet: the target domain's model over the source (the finetune chain's run of this period)
        if k == 0:
            target_run = out("finetune")
            chains["ctnet"].cost.append(
                {"train_s": 0.0, "wall_s": 0.0, "epochs": 0, "best_epoch": 0, "samples": 0}
            )
        else:
            ctnet_exp = experiment(
                f"ctnet-{k}", task, f["train-target"], f["hold-target"], files[k + 1]["all-target"], seed=seed,
                model={"transfer": "ctnet"}, train_cfg=quick,
            )  # fmt: skip
            target_run = chains["ctnet"].run(
                ctnet_exp, out("ctnet"), init=made["ctnet"][-1][1], source=out("finetune")
            )
        made["ctnet"].append((out("finetune"), target_run))

    def predictions(strategy: str, k: int, frame: pl.DataFrame) -> np.ndarray:
        run = made[strategy][k]
        if strategy != "ctnet":
            return scores(run, frame)
        source, target_run = run
        prob = scores(source, frame)
        is_target = (frame[domain].cast(pl.String) == target).to_numpy()
        if is_target.any():
            prob[is_target] = scores(target_run, frame.filter(pl.Series(is_target)))
        return prob

    result = {}
    for strategy in STRATEGIES:
        periods = []
        for k in range(last):
            frame = pl.read_parquet(files[k + 1]["all"])
            cost = chains[strategy].cost[k]
            if strategy == "ctnet":  # the source's updates are part of its cost
                source_cost = chains["finetune"].cost[k]
                cost = {
                    key: cost[key] + source_cost[key] for key in ("train_s", "wall_s", "samples", "epochs")
                } | {"best_epoch": cost["best_epoch"]}
            periods.append(
                {"period": k + 1, **metrics(frame, predictions(strategy, k, frame), domain, names), **cost}
            )
        forgetting = []
        for j in range(last):
            hold = pl.read_parquet(files[j]["hold"])
            then = metrics(hold, predictions(strategy, j, hold), domain, names)
            now = metrics(hold, predictions(strategy, last - 1, hold), domain, names)
            forgetting.append(
                {
                    "period": j,
                    "auc": then["auc"] - now["auc"],
                    "domains": {d: then["domains"][d] - now["domains"][d] for d in names},
                }
            )
        result[strategy] = {"periods": periods, "forgetting": forgetting}
    return result


def summarise(seeds: list[dict], names: list[str], target: str) -> list[dict]:
    rows = []
    for strategy in STRATEGIES:
        runs = [s[strategy] for s in seeds]
        per_seed_auc = [statistics.fmean(p["auc"] for p in r["periods"]) for r in runs]
        mean = lambda values: statistics.fmean(values)  # noqa: E731
        periods = []
        for i in range(len(runs[0]["periods"])):
            at = [r["periods"][i] for r in runs]
            periods.append(
                {
                    "period": at[0]["period"],
                    "auc": mean(p["auc"] for p in at),
                    "wauc": mean(p["wauc"] for p in at),
                    "gauc": mean(p["gauc"] for p in at),
                    "domains": {d: mean(p["domains"][d] for p in at) for d in names},
                    "train_s": mean(p["train_s"] for p in at),
                    "wall_s": mean(p["wall_s"] for p in at),
                    "samples": mean(p["samples"] for p in at),
                    "epochs": mean(p["epochs"] for p in at),
                }
            )
        rows.append(
            {
                "strategy": strategy,
                "mean_auc": mean(per_seed_auc),
                "mean_auc_std": statistics.stdev(per_seed_auc) if len(per_seed_auc) > 1 else 0.0,
                "seeds_mean_auc": per_seed_auc,
                "wauc": mean(p["wauc"] for p in periods),
                "gauc": mean(p["gauc"] for p in periods),
                "domains": {d: mean(p["domains"][d] for p in periods) for d in names},
                "domain_std": {
                    d: statistics.stdev([mean(p["domains"][d] for p in r["periods"]) for r in runs])
                    if len(runs) > 1
                    else 0.0
                    for d in names
                },
                "train_s": sum(p["train_s"] for p in periods),
                "wall_s": sum(p["wall_s"] for p in periods),
                "samples": sum(p["samples"] for p in periods),
                "forgetting": mean(f["auc"] for r in runs for f in r["forgetting"]),
                "forgetting_target": mean(f["domains"][target] for r in runs for f in r["forgetting"]),
                "periods": periods,
            }
        )
    return rows


def report(rows: list[dict], meta: dict, names: list[str], target: str) -> str:
    full = next(r for r in rows if r["strategy"] == "full_retrain")
    lines = [
        "# Continual updates: the replay protocol",
        "",
        f"`python benchmarks/continual.py` ({meta['command']}). Task `{meta['task']}` cut by time into "
        f"{meta['periods']} periods of about equal rows ({meta['period_rows']}); each model made after period k is "
        f"tested on period k+1 (so {meta['periods'] - 1} tested periods), {len(meta['seeds'])} seeds "
        f"({', '.join(map(str, meta['seeds']))}). BENCHMARKS.md settings for every training run (DNN [256, 128, 64], "
        "embedding 16, Adam 1e-3, batch 1024, dropout 0.2, patience 2, "
        + ("1 epoch: a smoke run, not a result" if meta["quick"] else "at most 10 epochs")
        + "); every strategy's time includes period 0's training. Target domain for CTNet: "
        f"`{target}`. Machine: {meta['cpu']}, flags {', '.join(meta['cpu_flags']) or 'none of avx2/avx512'}, "
        f"{meta['threads']} torch threads, matmul probe {meta['matmul_gflops']:.0f} GFLOP/s at the start and "
        f"{meta['matmul_gflops_end']:.0f} at the end.",
        "",
        "| strategy | mean AUC (± std over seeds) | Δ vs full retrain (std) | "
        + " | ".join(f"{d} AUC" for d in names)
        + " | WAUC | GAUC | train s (epochs) | wall s | time vs full | samples | forgetting AUC | forgetting "
        + target
        + " |",
        "|---|---|---|" + "---|" * len(names) + "---|---|---|---|---|---|---|---|",
    ]
    several = len(meta["seeds"]) > 1
    for r in rows:
        spread = max(r["mean_auc_std"], full["mean_auc_std"], 1e-9)
        diff = r["mean_auc"] - full["mean_auc"]
        lines.append(
            f"| {r['strategy']} | {r['mean_auc']:.4f} ± {r['mean_auc_std']:.4f} | "
            f"{diff:+.4f} ({f'{diff / spread:+.1f}' if several else 'n/a'}) | "
            + " | ".join(f"{r['domains'][d]:.4f}" for d in names)
            + f" | {r['wauc']:.4f} | {r['gauc']:.4f} | {r['train_s']:.0f} | {r['wall_s']:.0f} | "
            f"{r['train_s'] / full['train_s']:.0%} | {r['samples']:,.0f} | {r['forgetting']:+.4f} | {r['forgetting_target']:+.4f} |"
        )
    lines += ["", "AUC on each next period (mean over seeds):", ""]
    lines.append("| period | " + " | ".join(r["strategy"] for r in rows) + " |")
    lines.append("|---|" + "---|" * len(rows))
    for i, p in enumerate(full["periods"]):
        lines.append(f"| {p['period']} | " + " | ".join(f"{r['periods'][i]['auc']:.4f}" for r in rows) + " |")
    lines += ["", "Training seconds (epochs) per period:", ""]
    lines.append("| period | " + " | ".join(r["strategy"] for r in rows) + " |")
    lines.append("|---|" + "---|" * len(rows))
    for i, p in enumerate(full["periods"]):
        lines.append(
            f"| {p['period']} | " + " | ".join(f"{r['periods'][i]['train_s']:.1f}" for r in rows) + " |"
        )
    lines += ["", "## Targets", ""]
    incremental = [r for r in rows if r["strategy"] != "full_retrain"]
    cheap = [r for r in incremental if r["train_s"] <= 0.2 * full["train_s"]]
    best = max(cheap or incremental, key=lambda r: r["mean_auc"])
    gap = best["mean_auc"] - full["mean_auc"]
    met = gap >= -0.002 and best["train_s"] <= 0.2 * full["train_s"]
    lines.append(
        f"- best incremental strategy within 0.002 mean AUC of full retrain at <= 20 % of its training time: "
        f"{best['strategy']} {gap:+.4f} AUC at {best['train_s'] / full['train_s']:.0%} of the time: {'met' if met else 'MISSED'}"
    )
    ctnet = next(r for r in rows if r["strategy"] == "ctnet")
    for other in ("finetune", "adapters", "adapters_tables"):
        o = next(r for r in rows if r["strategy"] == other)
        spread = max(ctnet["domain_std"][target], o["domain_std"][target], 1e-9)
        diff = ctnet["domains"][target] - o["domains"][target]
        lines.append(
            f"- CTNet vs {other} on the target domain {target}: {ctnet['domains'][target]:.4f} vs "
            f"{o['domains'][target]:.4f} ({diff:+.4f}, {f'{diff / spread:+.1f}' if len(meta['seeds']) > 1 else 'n/a'} std)"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="ml1m-gender")
    parser.add_argument("--target", default="F")
    parser.add_argument("--periods", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="4 periods, 1 seed, 1 epoch: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.periods, args.seeds = 4, args.seeds[:1]
    torch.set_num_threads(args.threads)
    quick = {"epochs": 1} if args.quick else {}
    probe = matmul_probe(args.threads)
    with tempfile.TemporaryDirectory(prefix="continual-") as tmp:
        root = Path(tmp)
        files, domain = write_periods(args.task, args.periods, args.target, root)
        names = sorted(pl.read_parquet(files[0]["all"])[domain].cast(pl.String).unique().to_list())
        seeds = []
        for seed in args.seeds:
            start = time.perf_counter()
            seeds.append(run_seed(files, args.task, domain, args.target, seed, root / f"seed-{seed}", quick))
            print(f"seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    rows = summarise(seeds, names, args.target)
    meta = {
        "command": " ".join(["python benchmarks/continual.py", *sys.argv[1:]]),
        "task": args.task,
        "periods": args.periods,
        "period_rows": f"{min(f['rows'] for f in files):,}-{max(f['rows'] for f in files):,}",
        "period_bounds": [
            {"period": f["period"], "rows": f["rows"], "start": f["start"], "end": f["end"]} for f in files
        ],
        "seeds": args.seeds,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": cpu_flags(),
        "matmul_gflops": probe,
        "matmul_gflops_end": matmul_probe(args.threads),
        "quick": args.quick,
    }
    text = report(rows, meta, names, args.target)
    suffix = "-quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"continual{suffix}.md").write_text(text)
    (RESULTS / f"continual{suffix}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "seeds": seeds}, indent=2) + "\n"
    )
    print(text)


if __name__ == "__main__":
    main()
