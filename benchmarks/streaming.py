"""Streaming from parquet against the in-memory path: synthetic data at 1M, 10M and 50M rows.

    python benchmarks/streaming.py [--rows 1000000 10000000 50000000] [--memory-rows 1000000 10000000]
                                   [--repeat 2] [--threads 2]

Writes the synthetic log once under ``$MDCTR_CACHE/streaming`` (`mdctr data synth`: 1M-row shards
of 100k-row row groups; the first k shards are the k-million-row training set; validation 200k
and test 500k rows, the same for every size), then trains a DNN (benchmark settings) for one
epoch per run, each run in a process of its own: ``stream`` (``data.streaming: true``) and
``memory`` (the same files read into memory). Reported per run: peak RSS of the process, the
epoch's training samples/s, test AUC. Sizes that both modes run are run in alternating rounds
(``--repeat``), each figure the median. The loader alone (no model) is timed with and without
its shuffle buffer at the largest in-memory size. Results: ``results/streaming.{json,md}``.
Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mdctr.config import Experiment, load_experiment
from mdctr.data.cache import atomic_write_text, cache_dir
from mdctr.data.synthetic import SyntheticSpec, write_split

RESULTS = Path(__file__).parent / "results"
SHARD = 1_000_000
SPLIT_ROWS = {"valid": 200_000, "test": 500_000}


def data_folder(rows: int) -> Path:
    """Shards for ``rows`` training rows (and the fixed valid/test), written where missing."""
    root = cache_dir() / "streaming"
    spec = SyntheticSpec(rows=rows)
    for split, n in {"train": rows, **SPLIT_ROWS}.items():
        have = len(list((root / split).glob("*.parquet")))
        if have * SHARD < n:
            print(f"writing {split} shards {have} .. {n // SHARD}", flush=True)
            write_split(spec, root, split, n, SHARD, 100_000)
    return root


def experiment(root: Path, rows: int, mode: str, threads: int) -> tuple[Experiment, int]:
    """The benchmark's experiment on the shards under ``root``, and how many training shards."""
    overrides = [
        f"name=streaming-{mode}-{rows}",
        f"data.path={root / 'train'}",
        f"data.valid_path={root / 'valid'}",
        f"data.test_path={root / 'test'}",
        f"data.streaming={'true' if mode == 'stream' else 'false'}",
        "train.epochs=1",
        f"train.threads={threads}",
    ]
    return load_experiment(Path(__file__).parent / "streaming.yaml", overrides), rows // SHARD


def one(mode: str, rows: int, threads: int, out: Path) -> None:
    """One training run in this process; writes its figures to ``out``."""
    import tempfile

    from mdctr.pipeline import train_experiment

    torch.set_num_threads(threads)
    root = cache_dir() / "streaming"
    exp, shards = experiment(root, rows, mode, threads)
    with tempfile.TemporaryDirectory() as tmp:
        # the first `shards` files of the training folder: a folder of links to them
        train = Path(tmp) / "train"
        train.mkdir()
        for k in range(shards):
            (train / f"part-{k:05d}.parquet").symlink_to(root / "train" / f"part-{k:05d}.parquet")
        exp = exp.model_copy(update={"data": exp.data.model_copy(update={"path": str(train)})})
        start = time.perf_counter()
        result = train_experiment(exp, Path(tmp) / "run")
        wall = time.perf_counter() - start
    record = {
        "mode": mode,
        "rows": rows,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "samples_per_s": round(result.state.history[0]["samples_per_s"], 1),
        "auc": result.metrics["overall"]["auc"],
        "wauc": result.metrics["wauc"],
        "preprocess_s": round(result.preprocess_s, 2),
        "wall_s": round(wall, 1),
    }
    out.write_text(json.dumps(record))


def loader(rows: int, threads: int, out: Path) -> None:
    """Rows/s of the stream alone, without and with shuffling, two alternating passes each."""
    import polars as pl

    from mdctr.data.encode import Encoder
    from mdctr.data.stream import ParquetStream, survey
    from mdctr.data.synthetic import SCHEMA

    torch.set_num_threads(threads)
    root = cache_dir() / "streaming"
    files = [root / "train" / f"part-{k:05d}.parquet" for k in range(rows // SHARD)]
    encoder = Encoder.fit(pl.scan_parquet(files), SCHEMA, streaming=True)
    exp, _ = experiment(root, rows, "stream", threads)
    stream = ParquetStream(survey(files, SCHEMA), encoder, exp.data.shuffle_buffer)
    rates: dict[str, list[float]] = {"plain": [], "shuffled": []}
    for _ in range(2):
        for kind in rates:
            generator = torch.Generator().manual_seed(1) if kind == "shuffled" else None
            start = time.perf_counter()
            n = sum(len(b) for b in stream.batches(exp.train.batch_size, generator, by_domain=False))
            rates[kind].append(n / (time.perf_counter() - start))
    out.write_text(json.dumps({k: float(np.median(v)) for k, v in rates.items()}))


def child(args: list[str]) -> dict:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"streaming-{os.getpid()}-{time.monotonic_ns()}.json"
    done = subprocess.run(
        [sys.executable, __file__, *args, "--out", str(out)], capture_output=True, text=True
    )
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    record = json.loads(out.read_text())
    out.unlink()
    return record


def matmul_probe(threads: int) -> float:
    """GFLOP/s of a (1024 x 256) @ (256 x 256) float32 matmul: the machine's rate that day."""
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 256), torch.randn(256, 256)
    for _ in range(50):
        a @ b
    start, n = time.perf_counter(), 500
    for _ in range(n):
        a @ b
    return 2 * 1024 * 256 * 256 * n / (time.perf_counter() - start) / 1e9


def cpu_flags() -> list[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"))


def median_rows(records: list[dict]) -> list[dict]:
    """One row per (mode, rows): the median of each figure over the rounds."""
    keys = sorted({(r["mode"], r["rows"]) for r in records if "error" not in r}, key=lambda k: (k[1], k[0]))
    rows = []
    for mode, n in keys:
        runs = [r for r in records if r.get("mode") == mode and r.get("rows") == n]
        rows.append(
            {
                "mode": mode,
                "rows": n,
                **{
                    k: float(np.median([r[k] for r in runs]))
                    for k in ("peak_rss_mb", "samples_per_s", "auc", "wauc")
                },
                "runs": len(runs),
            }
        )
    return rows


def report(result: dict) -> str:
    rows = {(r["mode"], r["rows"]): r for r in result["rows"]}
    small, big = min(r for _, r in rows), max(r for _, r in rows)
    lines = [
        "# Streaming from parquet vs in memory",
        "",
        f"Synthetic log (6 domains), DNN [256, 128, 64], batch 1024, one epoch per run, {result['threads']} threads; "
        f"valid {SPLIT_ROWS['valid']:,} / test {SPLIT_ROWS['test']:,} rows for every size; each run its own "
        f"process. CPU flags: {', '.join(result['cpu_flags']) or 'none of avx2/avx512'}; matmul probe "
        f"{result['gflops']:.0f} GFLOP/s (1024x256x256 fp32). Command: `python benchmarks/streaming.py`.",
        "",
        "| mode | rows | peak RSS MB | samples/s | test AUC | WAUC | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['mode']} | {r['rows']:,} | {r['peak_rss_mb']:,.0f} | {r['samples_per_s']:,.0f} | "
        f"{r['auc']:.4f} | {r['wauc']:.4f} | {r['runs']} |"
        for r in result["rows"]
    ]
    lines += ["", "## Targets", ""]
    stream_small, stream_big = rows.get(("stream", small)), rows.get(("stream", big))
    if stream_small and stream_big:
        ratio = stream_big["peak_rss_mb"] / stream_small["peak_rss_mb"]
        lines.append(f"- streaming peak RSS at {big:,} / at {small:,} rows: {ratio:.2f} (target <= 1.3)")
    for n in sorted({r for _, r in rows}):
        if ("stream", n) in rows and ("memory", n) in rows:
            s, m = rows[("stream", n)], rows[("memory", n)]
            lines.append(
                f"- {n:,} rows: streaming samples/s / in-memory {s['samples_per_s'] / m['samples_per_s']:.2f} "
                f"(target >= 0.8 at 10M); AUC difference {s['auc'] - m['auc']:+.4f} (target within 0.002); "
                f"peak RSS {s['peak_rss_mb'] / m['peak_rss_mb']:.2f}x"
            )
    loader_rates = result.get("loader")
    if loader_rates and "plain" in loader_rates:
        lines.append(
            f"- loader alone at {result['loader_rows']:,} rows: {loader_rates['plain']:,.0f} rows/s in file order, "
            f"{loader_rates['shuffled']:,.0f} shuffled ({loader_rates['shuffled'] / loader_rates['plain']:.2f}x; target >= 0.5)"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000, 50_000_000])
    parser.add_argument("--memory-rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=2, help="rounds for the sizes both modes run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", choices=["stream", "memory", "loader"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one == "loader":
        return loader(args.rows[0], args.threads, args.out)
    if args.one is not None:
        return one(args.one, args.rows[0], args.threads, args.out)
    data_folder(max(args.rows + args.memory_rows))
    records = []
    for n in sorted(set(args.rows + args.memory_rows)):
        modes = [m for m, sizes in (("memory", args.memory_rows), ("stream", args.rows)) if n in sizes]
        for _ in range(args.repeat if len(modes) == 2 else 1):
            for mode in modes:
                record = child(["--one", mode, "--rows", str(n), "--threads", str(args.threads)])
                print(mode, n, record, flush=True)
                records.append({"mode": mode, "rows": n, **record})
    loader_rows = max(args.memory_rows)
    loader_rates = child(["--one", "loader", "--rows", str(loader_rows), "--threads", str(args.threads)])
    print("loader", loader_rates, flush=True)
    result = {
        "rows": median_rows(records),
        "runs": records,
        "loader": loader_rates,
        "loader_rows": loader_rows,
        "threads": args.threads,
        "cpu_flags": cpu_flags(),
        "gflops": matmul_probe(args.threads),
        "machine": platform.processor() or platform.machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "streaming.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(RESULTS / "streaming.md", report(result))
    print(report(result))


if __name__ == "__main__":
    main()
