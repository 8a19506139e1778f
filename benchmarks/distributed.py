"""Data-parallel training throughput and quality: DDP at N = 1, 2 (, 4) processes on this machine.

    python benchmarks/distributed.py                      # ml1m-gender, 3 epochs per run, ~5 min
    python benchmarks/distributed.py --nproc 1 2 4 --epochs 2

Each run is ``mdctr train configs/ml1m-gender.yaml --nproc N`` in its own process tree, one
after another (nothing else running), with the default thread policy: the machine's cores
divided among the processes. A reference row ``N = 1, 1 thread`` gives the per-process rate
scaling efficiency is measured against: efficiency(N) = samples/s(N) / (N x samples/s(1, 1
thread)); on a machine with fewer cores than N x threads it measures the sharing of cores, not
the interconnect. ``allreduce_mb_per_step``: the gradient bytes DDP all-reduces per step (every
trained parameter is dense here: tables under ``train.sparse.min_rows`` rows), 0 for one process.
AUC and WAUC are on the whole test split; the 1-process run is the reference (dropout masks
differ per process, so equality is statistical, not bitwise; the bitwise check is the test suite's).

Writes ``benchmarks/results/distributed.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from streaming import cpu_flags, matmul_probe  # noqa: E402

from mdctr import __version__  # noqa: E402
from mdctr.runs import git_commit  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CONFIG = Path(__file__).parent.parent / "configs" / "ml1m-gender.yaml"


def run(nproc: int, epochs: int, out: Path, threads: int | None) -> dict:
    """One training run; its figures from run.json, history.json and metrics.json."""
    command = [sys.executable, "-m", "mdctr", "train", str(CONFIG), "--out", str(out), "--quiet"]
    command += ["--nproc", str(nproc), "--set", f"train.epochs={epochs}", "--set", "train.patience=99"]
    if threads:
        command += ["--set", f"train.threads={threads}"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"N={nproc} failed:\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - start
    info = json.loads((out / "run.json").read_text())
    history = json.loads((out / "history.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    rates = [h["samples_per_s"] for h in history]
    return {
        "engine": "ddp",
        "nproc": nproc,
        "threads_per_process": info["torch_threads"],
        "samples_per_s": round(sorted(rates)[len(rates) // 2], 1),
        "epoch_rates": [round(r, 1) for r in rates],
        "auc": metrics["overall"]["auc"],
        "wauc": metrics["wauc"],
        "allreduce_mb_per_step": round(info["params"] * 4 / 2**20, 3) if nproc > 1 else 0.0,
        "params": info["params"],
        "wall_s": round(wall, 1),
    }


def report(result: dict) -> str:
    meta = result["meta"]
    lines = [
        "# Data-parallel training (DDP)",
        "",
        f"`{meta['command']}`, {meta['date']}, mdctr {meta['mdctr']} at {meta['git_commit']}. Machine: "
        f"{meta['cpu']}, {meta['cores']} cores, flags {', '.join(meta['cpu_flags']) or 'none of avx2/avx512'}, "
        f"matmul probe {meta['matmul_gflops']:.0f} GFLOP/s (1 thread). ml1m-gender DNN, global batch 1024, "
        f"{meta['epochs']} epochs per run, median epoch rate.",
        "",
        "| engine | processes | threads each | samples/s | x 1 process | scaling efficiency | all-reduce MB/step | test AUC | AUC - 1 process | WAUC |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = next(r for r in result["rows"] if r["nproc"] == 1 and not r.get("reference"))
    per_process = next(r for r in result["rows"] if r.get("reference"))
    for r in result["rows"]:
        efficiency = r["samples_per_s"] / (r["nproc"] * per_process["samples_per_s"])
        tag = " (reference)" if r.get("reference") else ""
        lines.append(
            f"| {r['engine']}{tag} | {r['nproc']} | {r['threads_per_process']} | {r['samples_per_s']:,.0f} | "
            f"{r['samples_per_s'] / base['samples_per_s']:.2f} | {efficiency:.2f} | {r['allreduce_mb_per_step']:.2f} | "
            f"{r['auc']:.4f} | {r['auc'] - base['auc']:+.4f} | {r['wauc']:.4f} |"
        )
    lines += [
        "",
        "Scaling efficiency = samples/s / (processes x the 1-thread single process's samples/s). "
        f"With {meta['cores']} cores, N processes share them: a figure of the machine, not of a cluster.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    meta = {
        "command": " ".join(["python benchmarks/distributed.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "git_commit": git_commit(),
        "mdctr": __version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "matmul_gflops": matmul_probe(1),
        "epochs": args.epochs,
        "load_before": os.getloadavg()[0],
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        reference = run(1, args.epochs, Path(tmp) / "ref", threads=1)
        rows.append(reference | {"reference": True})
        for n in args.nproc:
            rows.append(run(n, args.epochs, Path(tmp) / f"n{n}", threads=None))
            print(json.dumps(rows[-1]), flush=True)
    meta["matmul_gflops_end"] = matmul_probe(1)
    result = {"meta": meta, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distributed.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "distributed.md").write_text(report(result))
    print(report(result))


if __name__ == "__main__":
    main()
