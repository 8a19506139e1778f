"""Multi-domain benchmark: every multi-domain model on the benchmark tasks, several seeds.

    python benchmarks/multidomain.py --tasks synthetic ml1m-age ml1m-gender --seeds 5
    python benchmarks/multidomain.py --tasks synthetic --models none mlora star --seeds 5
    python benchmarks/multidomain.py --speed --tasks ml1m-age    # samples/s, idle machine, 3 rounds

A model is ``NAME[:RECIPE][@BACKBONE][+key=value...]`` (e.g. ``mlora:two_stage``,
``mlora@deepfm``, ``mlora+train.adapter.lr=0.0001``: ``--set``-style overrides). Every
finished run is appended to ``results/multidomain-runs.jsonl`` and skipped when asked again,
so the table fills up over several invocations. Writes ``results/multidomain.md`` and
``.json`` (per-domain AUC, mean AUC, WAUC, GAUC as mean ± std over seeds, parameters, adapter
share, training samples/s and its ratio to the shared model of the same backbone, the oracle
AUC on synthetic data) and ``multidomain.png``. Every run uses ``model.dense_init=torch``: the
table was started before xavier_normal became the default, and stays comparable until rerun.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from mdctr.config import apply_overrides, parse_experiment
from mdctr.metrics import headline
from mdctr.pipeline import train_experiment
from mdctr.runs import provenance

RESULTS = Path(__file__).parent / "results"
MODELS = [
    "none",
    "separate",
    "shared_bottom",
    "mmoe",
    "ple",
    "star",
    "pepnet",
    "dadnn",
    "mlora",
    "mlora:two_stage",
    "modula:two_stage",
    "modula_res:two_stage",
    "mlora@deepfm",
    "none@deepfm",
]


def parse_model(spec: str) -> tuple[str, str, str, list[str]]:
    """``NAME[:RECIPE][@BACKBONE][+key=value...]`` -> (multidomain, recipe, backbone, overrides)."""
    spec, *overrides = spec.split("+")
    spec, _, backbone = spec.partition("@")
    name, _, recipe = spec.partition(":")
    return name, recipe or "joint", backbone or "dnn", overrides


def run_one(task: str, spec: str, seed: int, rows: int | None, extra: tuple[str, ...] = ()) -> dict:
    name, recipe, backbone, overrides = parse_model(spec)
    overrides = [*overrides, *extra]
    data = {"task": task, **({"rows": rows} if rows and task == "synthetic" else {})}
    tree = {
        "name": spec,
        "data": data,
        "model": {"backbone": backbone, "multidomain": name},
        "train": {"seed": seed, "recipe": recipe},
    }
    exp = parse_experiment(apply_overrides(tree, overrides))
    with tempfile.TemporaryDirectory() as tmp:
        result = train_experiment(exp, Path(tmp) / "run")
    m = result.metrics
    history = result.state.history
    return {
        "task": task,
        "model": spec,
        "multidomain": name,
        "recipe": recipe,
        "backbone": backbone,
        "seed": seed,
        **headline(m),
        "oracle": m.get("oracle"),
        "params": result.params,
        "adapter_params": result.adapter_params,
        "samples_per_s": float(
            np.median(
                [h["samples_per_s"] for h in history if h["stage"] != "shared"]
                or [h["samples_per_s"] for h in history]
            )
        ),
        "epochs": result.state.epoch,
        "best_epoch": result.state.best_epoch,
        "best_stage": result.state.best_stage,
        "threads": torch.get_num_threads(),
        "git_commit": provenance(exp)["git_commit"],
    }


def load_runs(path: Path) -> list[dict]:
    """Every recorded run, the first of each (task, model, seed) when two processes raced."""
    if not path.is_file():
        return []
    runs_: dict[tuple, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            runs_.setdefault((r["task"], r["model"], r["seed"]), r)
    return list(runs_.values())


def measure_speed(
    task: str, specs: list[str], rows: int | None, base: tuple[str, ...] = (), repeat: int = 1
) -> dict[str, list[float]]:
    """Training samples/s of one epoch per model, back to back in this process (run it on an
    otherwise idle machine), ``repeat`` rounds round robin; each round runs the shared model
    first and last. Returns every model's rates, one per run."""
    order = ["none", *[s for s in specs if s != "none"], "none"]
    rates: dict[str, list[float]] = {}
    for round_ in range(repeat):
        for spec in order:
            record = run_one(task, spec, 2024, rows, extra=(*base, "train.epochs=1"))
            rates.setdefault(spec, []).append(record["samples_per_s"])
            print(f"{task} round {round_ + 1} {spec}: {record['samples_per_s']:,.0f} samples/s", flush=True)
        drift = rates["none"][-1] / rates["none"][-2]
        print(f"{task} round {round_ + 1}: shared model last/first = {drift:.3f}", flush=True)
    return rates


def load_speed(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"tasks": {}}


def shared_rate(rates: dict[str, float], backbone: str) -> float | None:
    """samples/s of the plain shared model (``none``, no overrides) of ``backbone``."""
    for spec, rate in rates.items():
        name, recipe, spec_backbone, overrides = parse_model(spec)
        if (name, recipe, spec_backbone, overrides) == ("none", "joint", backbone, []):
            return rate
    return None


def summarise(all_runs: list[dict], speed: dict, models: tuple[str, ...] = tuple(MODELS)) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in all_runs:
        groups.setdefault((r["task"], r["model"]), []).append(r)
    rows = []
    for (task, spec), runs_ in groups.items():

        def stat(key: str, items: list[dict] = runs_) -> tuple[float, float]:
            values = [r[key] for r in items if r[key] is not None]
            return (float(np.mean(values)), float(np.std(values))) if values else (float("nan"), 0.0)

        row = {
            "task": task,
            "model": spec,
            "multidomain": runs_[0]["multidomain"],
            "recipe": runs_[0]["recipe"],
            "backbone": runs_[0]["backbone"],
            "seeds": len(runs_),
            "params": runs_[0]["params"],
            "adapter_share": runs_[0]["adapter_params"] / runs_[0]["params"],
        }
        for key in ("auc", "logloss", "mean_auc", "wauc", "gauc"):
            row[f"{key}_mean"], row[f"{key}_std"] = stat(key)
        row["samples_per_s"] = speed["tasks"].get(task, {}).get(spec)
        row["domains"] = {d: stat_domain(runs_, d) for d in runs_[0]["domains"]}
        row["best_stages"] = sorted({r["best_stage"] for r in runs_})
        if runs_[0].get("oracle"):
            row["oracle_wauc"] = float(np.mean([r["oracle"]["wauc"] for r in runs_]))
        rows.append(row)
    for row in rows:
        base = next(  # the plain shared model (no overrides), whatever order the runs came in
            (
                r
                for r in rows
                if r["task"] == row["task"]
                and parse_model(r["model"]) == ("none", "joint", row["backbone"], [])
            ),
            None,
        )
        shared = shared_rate(speed["tasks"].get(row["task"], {}), row["backbone"])
        row["speed_vs_shared"] = row["samples_per_s"] / shared if row["samples_per_s"] and shared else None
        row["wauc_vs_shared"] = row["wauc_mean"] - base["wauc_mean"] if base else None
        both = base is not None and min(base["seeds"], row["seeds"]) > 1  # std units need 2+ seeds each
        spread = max(base["wauc_std"], row["wauc_std"]) if both else 0.0
        row["wauc_vs_shared_in_std"] = row["wauc_vs_shared"] / spread if spread > 0 else None
    order = {m: i for i, m in enumerate(models)}
    return sorted(rows, key=lambda r: (r["task"], order.get(r["model"], 99), r["model"]))


def stat_domain(runs_: list[dict], domain: str) -> tuple[float, float]:
    values = [r["domains"][domain] for r in runs_ if r["domains"].get(domain) is not None]
    return float(np.mean(values)), float(np.std(values))


def label(spec: str) -> str:
    """A model spec as the tables print it: ``none+model.embedding_dim=8`` -> ``none + embedding_dim=8``."""
    return spec.replace("+model.", " + ")


def markdown(rows: list[dict], speed: dict, name: str = "multidomain") -> str:
    out = [
        f"# {name.capitalize()} benchmark",
        "",
        "Test split, mean ± std over seeds (BENCHMARKS.md settings; the seeds' torch threads and git "
        f"commit are in `{name}-runs.jsonl`). `Δ WAUC` in units of the larger std of the pair. "
        f"samples/s: one training epoch per model back to back on an idle machine with "
        f"{speed.get('threads', '?')} threads, the median over the rounds of `--speed` (every run is in "
        f"`{name}-speed.json`; two-stage models: the adapter stage); `speed` = "
        "samples/s / the shared model's (`none`, same backbone) from that same pass. "
        f"Command: see `benchmarks/{name}.py`.",
        "",
    ]
    for task in dict.fromkeys(r["task"] for r in rows):
        sub = [r for r in rows if r["task"] == task]
        out += [f"## {task}", ""]
        if "oracle_wauc" in sub[0]:
            out += [f"Oracle (true p) WAUC: {sub[0]['oracle_wauc']:.4f}", ""]
        domains = list(sub[0]["domains"])
        out += [
            "| model | seeds | WAUC | Δ WAUC (std) | mean AUC | AUC | GAUC | "
            + " | ".join(domains)
            + " | params | adapter share | samples/s | speed | best stage |",
            "|" + "---|" * (11 + len(domains)),
        ]
        for r in sub:
            doms = " | ".join(f"{r['domains'][d][0]:.4f}" if d in r["domains"] else "-" for d in domains)
            delta = (
                ""
                if r["wauc_vs_shared"] is None
                else f"{r['wauc_vs_shared']:+.4f} "
                + (
                    "(1 seed)"
                    if r["wauc_vs_shared_in_std"] is None
                    else f"({r['wauc_vs_shared_in_std']:+.1f})"
                )
            )
            speed = "-" if r["speed_vs_shared"] is None else f"{r['speed_vs_shared']:.2f}×"
            rate = "-" if not r["samples_per_s"] else f"{r['samples_per_s']:,.0f}"
            out.append(
                f"| {label(r['model'])} | {r['seeds']} | {r['wauc_mean']:.4f} ± {r['wauc_std']:.4f} | {delta} | "
                f"{r['mean_auc_mean']:.4f} | {r['auc_mean']:.4f} | {r['gauc_mean']:.4f} | {doms} | "
                f"{r['params']:,} | {r['adapter_share']:.1%} | {rate} | {speed} | "
                f"{', '.join(r['best_stages'])} |"
            )
        out.append("")
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        sub = [r for r in rows if r["task"] == task]
        ax.errorbar(
            [r["wauc_mean"] for r in sub], range(len(sub)), xerr=[r["wauc_std"] for r in sub], fmt="o"
        )
        ax.set_yticks(range(len(sub)), [label(r["model"]) for r in sub])
        if "oracle_wauc" in sub[0]:
            ax.axvline(sub[0]["oracle_wauc"], color="gray", linestyle="--", label="oracle")
            ax.legend()
        ax.set_title(task)
        ax.set_xlabel("test WAUC")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(
    name: str = "multidomain",
    tasks: tuple[str, ...] = ("synthetic", "ml1m-age", "ml1m-gender"),
    models: tuple[str, ...] = tuple(MODELS),
    seeds: int = 5,
    doc: str | None = __doc__,
    base: tuple[str, ...] = (),
) -> None:
    """Fill ``results/<name>-runs.jsonl`` and write ``<name>.md`` / ``.json`` / ``.png``; ``base``:
    overrides applied to every run."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(tasks))
    parser.add_argument("--models", nargs="+", default=list(models))
    parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--rows", type=int, default=None, help="synthetic rows (default: the task's 1M)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--speed", action="store_true", help="measure training speed (one epoch per model) instead of quality"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="--speed: rounds round robin; each figure is the median"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)
    runs_path, speed_path = RESULTS / f"{name}-runs.jsonl", RESULTS / f"{name}-speed.json"
    speed = load_speed(speed_path)
    if args.speed:
        for task in args.tasks:
            runs_ = measure_speed(task, args.models, args.rows, base, args.repeat)
            speed["tasks"][task] = {spec: float(np.median(v)) for spec, v in runs_.items()}
            speed.setdefault("runs", {})[task] = runs_  # every run's samples/s, for the record
            speed["threads"] = args.threads
            # written per task: an interrupted pass keeps the tasks it finished
            speed_path.write_text(json.dumps(speed, indent=1) + "\n")
    for task in [] if args.report_only or args.speed else args.tasks:
        for seed in range(2024, 2024 + args.seeds):
            for spec in args.models:
                if (task, spec, seed) in {(r["task"], r["model"], r["seed"]) for r in load_runs(runs_path)}:
                    continue  # read again before each run: another process may have done it
                record = run_one(task, spec, seed, args.rows, extra=base)
                with runs_path.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
                print(
                    f"{task} {spec} seed {seed}: WAUC {record['wauc']:.4f}, {record['samples_per_s']:,.0f} "
                    f"samples/s, best {record['best_stage']} epoch {record['best_epoch']}",
                    flush=True,
                )
    rows = summarise(load_runs(runs_path), speed, models)
    if not rows:
        return
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(rows, speed, name))
    plot(rows, RESULTS / f"{name}.png")


if __name__ == "__main__":
    # The table was started before model.dense_init defaulted to xavier_normal; its rows keep
    # torch's init until it is rerun in full.
    main(base=("model.dense_init=torch",))
