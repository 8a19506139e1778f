"""mdctr against FuxiCTR, DeepCTR-Torch and torch-rechub on the same split (BENCHMARKS.md).

    python benchmarks/peers/run.py --task ml1m-gender            # quality: 3 seeds each
    python benchmarks/peers/run.py --task ml1m-gender --speed    # speed: idle machine, 3 rounds of 2 epochs
    python benchmarks/peers/run.py --report-only

Writes the split once as CSV files (raw values, genres joined by "|") under the mdctr cache,
creates one virtual environment per peer from ``requirements-<peer>.txt`` (kept under
``benchmarks/peers/.envs``), and runs every library x model x seed as its own process
(``run_<library>.py``), recording test AUC / WAUC / per-domain AUC / logloss, epochs, training
samples/s over full epochs, preprocessing seconds (raw CSV -> training-ready) and the peak RSS
of the whole process tree (Ray's workers included), polled from /proc. The lean hand-written
PyTorch loop (``run_lean.py``) is the speed reference.

Quality runs go to ``results/peers-runs.jsonl`` (one row per run, skipped when present);
``--speed`` runs every library back to back, ``--repeat`` rounds (default 3, round robin, each
figure the median of its rounds), and writes ``results/peers-speed.json`` with the matmul rate
probed in the same process before and after every round (the compute bound). The report
(``results/peers.md`` / ``peers.json``) takes AUC and memory from the quality runs and
samples/s and preprocessing seconds from the speed run, so every ratio comes from one run.
A library that fails to install or run is reported with its error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

HERE = Path(__file__).parent
RESULTS = HERE.parent / "results"
ENVS = HERE / ".envs"
sys.path.insert(0, str(HERE))
from common import CATEGORICAL, DOMAIN, EMBEDDING_DIM, HIDDEN, LABEL, SEQUENCE, SEQUENCE_SEP, SPLITS  # noqa: E402

from mdctr.config import DataConfig  # noqa: E402
from mdctr.data.cache import atomic_write_text, cache_dir  # noqa: E402
from mdctr.data.table import domain_key, prepare  # noqa: E402

LIBRARIES = {  # name -> (script, requirements file or None for mdctr's own environment, extra arguments)
    "mdctr": ("run_mdctr.py", None),
    "mdctr-bf16": ("run_mdctr.py", None, "--bf16"),
    "lean-pytorch": ("run_lean.py", None),
    "fuxictr": ("run_fuxictr.py", "requirements-fuxictr.txt"),
    "deepctr-torch": ("run_deepctr.py", "requirements-deepctr-torch.txt"),
    "torch-rechub": ("run_rechub.py", "requirements-torch-rechub.txt"),
}
PEERS = ("fuxictr", "deepctr-torch", "torch-rechub")
MODELS = ("dnn", "deepfm")


def write_split(task: str) -> Path:
    """The task's train/valid/test split as CSV files, written once."""
    folder = cache_dir() / "peers" / task
    if all((folder / f"{s}.csv").is_file() for s in SPLITS):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    data = prepare(DataConfig(task=task))
    for split in SPLITS:
        frame = getattr(data, split).select(
            *CATEGORICAL,
            pl.col(SEQUENCE).list.join(SEQUENCE_SEP),
            pl.col(LABEL).cast(pl.Int8),
            domain_key(data.schema.domain).alias(DOMAIN),
        )
        atomic_write_text(folder / f"{split}.csv", frame.write_csv())
    return folder


def python_for(library: str) -> tuple[Path | None, str | None]:
    """The interpreter that runs ``library`` (creating its environment), or None and the error."""
    requirements = LIBRARIES[library][1]
    if requirements is None:
        return Path(sys.executable), None
    env, spec = ENVS / library, (HERE / requirements).read_text()
    stamp = env / ".requirements-sha256"
    digest = hashlib.sha256(spec.encode()).hexdigest()
    if not (stamp.is_file() and stamp.read_text() == digest):
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(env)],
            [str(env / "bin" / "pip"), "install", "--quiet", "-r", str(HERE / requirements)],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode:
                return None, f"install failed: {' '.join(step[-3:])}: {last_line(done.stderr)}"
        stamp.write_text(digest)
    return env / "bin" / "python", None


def last_line(text: str) -> str:
    """The last exception line of a log (a library may print after it), else its last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", line)]
    return (errors or lines or ["(no output)"])[-1][:300]


def tree_rss_mb(root: int) -> float:
    """Summed resident memory of ``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total / 2**20


def run_one(library: str, model: str, seed: int, data: Path, threads: int, epochs: int, timeout: int) -> dict:
    """Run one library x model x seed in its own process; its result plus peak RSS, or its error."""
    row = {"library": library, "model": model, "seed": seed}
    python, error = python_for(library)
    if python is None:
        return {**row, "error": error}
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "result.json"
        command = [
            str(python),
            str(HERE / LIBRARIES[library][0]),
            *LIBRARIES[library][2:],
            *("--data", str(data), "--model", model, "--seed", str(seed), "--threads", str(threads)),
            *("--out", str(out), "--work", str(Path(work) / "scratch"), "--max-epochs", str(epochs)),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        with open(Path(work) / "log.txt", "w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
            peak, start = 0.0, time.monotonic()
            while process.poll() is None:
                peak = max(peak, tree_rss_mb(process.pid))
                if time.monotonic() - start > timeout:
                    process.kill()
                    process.wait()
                    return {**row, "error": f"timed out after {timeout} s"}
                time.sleep(0.1)
        if process.returncode or not out.is_file():
            log_text = (Path(work) / "log.txt").read_text(errors="replace")
            return {**row, "error": f"exit {process.returncode}: {last_line(log_text)}"}
        return {
            **json.loads(out.read_text()),
            "peak_rss_mb": round(peak, 1),
            "wall_s": time.monotonic() - start,
        }


def matmul_rate(threads: int, inputs: int) -> float:
    """GFLOP/s of the DNN's dense layers, forward and backward, at batch 1024 (the compute bound)."""
    torch.set_num_threads(threads)
    sizes = (inputs, *HIDDEN, 1)
    weights = [torch.randn(a, b) * 0.05 for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    x = torch.randn(1024, inputs)

    def step() -> None:
        acts = [x]
        for w in weights:
            acts.append(acts[-1] @ w)
        grad = torch.ones_like(acts[-1])
        for w, a in zip(reversed(weights), reversed(acts[:-1]), strict=True):
            _ = a.T @ grad
            grad = grad @ w.T

    for _ in range(20):
        step()
    start, n = time.perf_counter(), 200
    for _ in range(n):
        step()
    return flops_per_sample(inputs) * 1024 * n / (time.perf_counter() - start) / 1e9


def mlp_inputs(library: str) -> int:
    """Width of the MLP's input: every field's embedding (mdctr adds its domain field)."""
    return EMBEDDING_DIM * (len(CATEGORICAL) + 1 + library.startswith("mdctr"))


def flops_per_sample(inputs: int) -> float:
    """Dense-layer FLOPs of one training sample: 2 per multiply-add, forward + 2x backward."""
    sizes = (inputs, *HIDDEN, 1)
    return 2 * 3 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def load_runs(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(runs: list[dict], speed: dict) -> list[dict]:
    """One row per library x model: quality over seeds, speed and preprocessing from the
    speed run, ratios to mdctr's row of the same model."""
    rows = []
    for library in LIBRARIES:
        for model in MODELS:
            done = [r for r in runs if r["library"] == library and r["model"] == model and "error" not in r]
            failed = [r for r in runs if r["library"] == library and r["model"] == model and "error" in r]
            fast = speed.get("runs", {}).get(f"{library}/{model}", {})
            if not done and not failed and not fast:
                continue
            row = {"library": library, "model": model, "seeds": len(done)}
            if done:
                row["auc"], row["auc_std"] = mean_std([r["auc"] for r in done])
                row["wauc"], row["wauc_std"] = mean_std([r["wauc"] for r in done])
                row["logloss"] = float(np.mean([r["logloss"] for r in done]))
                row["domain_auc"] = {
                    d: float(np.mean([r["domain_auc"][d] for r in done])) for d in done[0]["domain_auc"]
                }
                row["epochs"] = float(np.mean([r["epochs"] for r in done]))
                row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in done)
            row["samples_per_s"] = fast.get("samples_per_s")
            row["round_samples_per_s"] = fast.get("rounds", {}).get("samples_per_s")
            row["preprocess_s"] = fast.get("preprocess_s")
            row["error"] = (failed[-1]["error"] if failed and not done else None) or fast.get("error")
            if row["samples_per_s"] and speed.get("gflops"):
                inputs = EMBEDDING_DIM * (len(CATEGORICAL) + 1 + library.startswith("mdctr"))
                row["compute_bound_share"] = (
                    row["samples_per_s"] * flops_per_sample(inputs) / (speed["gflops"] * 1e9)
                )
            rows.append(row)
    for row in rows:
        ref = next((r for r in rows if r["library"] == "mdctr" and r["model"] == row["model"]), None)
        if ref is None:
            continue
        for key in ("samples_per_s", "preprocess_s", "peak_rss_mb"):
            if row.get(key) and ref.get(key):
                row[f"{key}_vs_mdctr"] = row[key] / ref[key]
        if row.get("auc") is not None and ref.get("auc") is not None:
            spread = max(row["auc_std"], ref["auc_std"]) or float("nan")
            row["auc_delta_vs_mdctr_std"] = (row["auc"] - ref["auc"]) / spread
    return rows


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, each with the measured figure, for mdctr in float32 and in bf16."""
    lines = []
    for ours in [r for r in rows if r["library"] in ("mdctr", "mdctr-bf16")]:
        peers = [
            r for r in rows if r["library"] in PEERS and r["model"] == ours["model"] and not r.get("error")
        ]
        who = f"{ours['library']} {ours['model']}"
        pairs = [
            (
                "training samples/s >= 3x the fastest peer",
                "samples_per_s",
                max,
                lambda o, p: o / p,
                3.0,
                True,
            ),
            (
                "preprocessing >= 10x faster than the fastest peer",
                "preprocess_s",
                min,
                lambda o, p: p / o,
                10.0,
                True,
            ),
            ("peak RSS <= 0.5x the smallest peer's", "peak_rss_mb", min, lambda o, p: o / p, 0.5, False),
        ]
        for text, key, pick, ratio, bound, at_least in pairs:
            values = [r for r in peers if r.get(key)]
            if not values or not ours.get(key):
                continue
            best = pick(values, key=lambda r: r[key])
            value, rounds = ratio(ours[key], best[key]), ""
            per_round = (
                [r.get("round_samples_per_s") for r in (ours, *values)] if key == "samples_per_s" else []
            )
            if per_round and all(per_round) and len({len(r) for r in per_round}) == 1:
                # the machine drifts between rounds: compare within each round, report the median
                ratios = [o / max(p) for o, *p in zip(*per_round, strict=True)]
                value = float(np.median(ratios))
                rounds = f" (median of the rounds' {', '.join(f'{r:.2f}' for r in ratios)})"
            met = value >= bound if at_least else value <= bound
            lines.append(
                f"- {who}: {text} ({best['library']}): {value:.2f}x{rounds}, {'met' if met else 'MISSED'}"
            )
        for peer in peers:
            if peer.get("auc") is None or ours.get("auc") is None:
                continue
            spread = 2 * max(peer["auc_std"], ours["auc_std"])
            ok = ours["auc"] >= peer["auc"] - spread
            lines.append(
                f"- {who}: test AUC vs {peer['library']}: {ours['auc']:.4f} vs {peer['auc']:.4f} "
                f"(2 std = {spread:.4f}): {'met' if ok else 'MISSED'}"
            )
    return lines


def median_run(rows: list[dict]) -> dict:
    """The speed run of median samples/s (its preprocessing seconds: the median of the rounds),
    with every round's figures kept; the first error when a round failed."""
    failed = [r for r in rows if "error" in r]
    if failed:
        return failed[0]
    out = dict(sorted(rows, key=lambda r: r["samples_per_s"])[len(rows) // 2])
    out["preprocess_s"] = float(np.median([r["preprocess_s"] for r in rows]))
    out["rounds"] = {k: [r[k] for r in rows] for k in ("samples_per_s", "preprocess_s")}  # in round order
    return out


def markdown(rows: list[dict], speed: dict, task: str) -> str:
    def f(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    out = [
        "# mdctr vs peers",
        "",
        f"Task `{task}`, BENCHMARKS.md settings (DNN {list(HIDDEN)}, embedding {EMBEDDING_DIM}, batch 1024,"
        " Adam 1e-3, dropout 0.2, early stopping patience 2, at most 10 epochs). Quality: mean ± std over the"
        " seeds (`results/peers-runs.jsonl`); peak RSS: the largest over those runs, whole process tree."
        f" Speed: `--speed`, every library back to back on an idle machine with {speed.get('threads', '?')}"
        f" threads, {speed.get('repeat', 1)} round(s) round robin, each figure the median over the rounds of the"
        " second (warm) training epoch's samples/s; preprocessing: raw CSV files -> training-ready arrays, same"
        f" runs (median). Compute bound: dense-layer matmuls probed in that run at {f(speed.get('gflops'), '.0f')}"
        f" GFLOP/s (probes {', '.join(f'{p:.0f}' for p in speed.get('probes', []))}); `bound` = share of it"
        " reached (dense FLOPs only). `x mdctr` = the library's figure / mdctr's.",
        "",
        "| library | model | seeds | AUC | WAUC | logloss | per-domain AUC | epochs | samples/s | bound"
        " | preprocess s | peak RSS MB | samples/s x mdctr | preprocess x mdctr | RSS x mdctr | ΔAUC (std) | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        domains = ", ".join(f"{d} {v:.4f}" for d, v in r.get("domain_auc", {}).items()) or "-"
        out.append(
            f"| {r['library']} | {r['model']} | {r['seeds']} "
            f"| {f(r.get('auc'), '.4f')} ± {f(r.get('auc_std'), '.4f')} | {f(r.get('wauc'), '.4f')} "
            f"| {f(r.get('logloss'), '.4f')} | {domains} | {f(r.get('epochs'), '.1f')} "
            f"| {f(r.get('samples_per_s'), ',.0f')} | {f(r.get('compute_bound_share'), '.0%')} "
            f"| {f(r.get('preprocess_s'), '.2f')} | {f(r.get('peak_rss_mb'), ',.0f')} "
            f"| {f(r.get('samples_per_s_vs_mdctr'), '.2f')} | {f(r.get('preprocess_s_vs_mdctr'), '.1f')} "
            f"| {f(r.get('peak_rss_mb_vs_mdctr'), '.2f')} | {f(r.get('auc_delta_vs_mdctr_std'), '+.1f')} "
            f"| {r.get('error') or ''} |"
        )
    out += ["", "## Targets", "", *targets(rows), ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="ml1m-gender")
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=list(LIBRARIES))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    parser.add_argument("--speed", action="store_true", help="speed run: 2 epochs per library, back to back")
    parser.add_argument("--repeat", type=int, default=3, help="speed rounds; each figure is their median")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    runs_path, speed_path = RESULTS / "peers-runs.jsonl", RESULTS / "peers-speed.json"
    speed = json.loads(speed_path.read_text()) if speed_path.is_file() else {}
    if not args.report_only:
        data = write_split(args.task)
        if args.speed:
            probe = [matmul_rate(args.threads, mlp_inputs("mdctr"))]
            rounds: dict[str, list[dict]] = {}
            for _ in range(args.repeat):  # round robin: a slow spell of the machine hits every library
                for library in args.libraries:
                    for model in args.models:
                        row = run_one(library, model, 2024, data, args.threads, 2, args.timeout)
                        if "error" not in row:
                            row["samples_per_s"] = row["history"][-1]["samples_per_s"]
                        rounds.setdefault(f"{library}/{model}", []).append(row)
                        print(
                            f"speed {library} {model}: {row.get('samples_per_s', row.get('error'))}",
                            flush=True,
                        )
                probe.append(matmul_rate(args.threads, mlp_inputs("mdctr")))
            speed = {
                "task": args.task,
                "threads": args.threads,
                "repeat": args.repeat,
                "gflops": float(np.mean(probe)),
                "probes": probe,
                "runs": {key: median_run(rows) for key, rows in rounds.items()},
            }
            atomic_write_text(speed_path, json.dumps(speed, indent=1) + "\n")
        else:
            for seed in range(2024, 2024 + args.seeds):
                for library in args.libraries:
                    for model in args.models:
                        key = (library, model, seed)
                        if any((r["library"], r["model"], r["seed"]) == key for r in load_runs(runs_path)):
                            continue
                        row = {
                            "task": args.task,
                            **run_one(library, model, seed, data, args.threads, 10, args.timeout),
                        }
                        with runs_path.open("a") as fh:
                            fh.write(json.dumps(row) + "\n")
                        print(
                            f"{library} {model} seed {seed}: {row.get('auc', row.get('error'))}", flush=True
                        )
    rows = summarise(load_runs(runs_path), speed)
    atomic_write_text(RESULTS / "peers.json", json.dumps(rows, indent=1) + "\n")
    atomic_write_text(RESULTS / "peers.md", markdown(rows, speed, args.task))


if __name__ == "__main__":
    main()
