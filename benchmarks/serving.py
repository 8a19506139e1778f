"""Serving benchmark: in-process scoring latency and an HTTP load test against `mdctr serve`.

    python benchmarks/serving.py                      # trains a 1-epoch ml1m-age MLoRA run first
    python benchmarks/serving.py --run runs/my-run    # or scores with an existing run

In-process (1 thread): p50/p99 for 1, 100 and 1000 candidates, model only (pre-encoded
arrays: ONNX Runtime vs PyTorch eager) and end to end (raw rows -> Predictor.predict_records).
HTTP: the server on 127.0.0.1 in its own process; an open-loop client sends requests of 100
candidates at a fixed rate for a bounded time, rate after rate, and measures each request
from its scheduled send time (so a stalled server cannot hide its queue). It stops at the
first rate with an error or whose throughput falls 10 % short. Writes
``results/serving.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mdctr.config import load_experiment
from mdctr.data.loader import TensorData
from mdctr.data.table import prepare
from mdctr.pipeline import train_experiment
from mdctr.predictor import Predictor

RESULTS = Path(__file__).parent / "results"
CONFIGS = Path(__file__).parent.parent / "configs"


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def timed(fn, repeats: int, warmup: int = 50) -> dict[str, float]:  # noqa: ANN001
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return percentiles(times)


def in_process(run: Path, candidates: list[dict], sizes: list[int]) -> list[dict]:
    onnx, eager = Predictor(run, threads=1), Predictor(run, backend="torch")  # torch: 1 thread, set in main
    rows = []
    for n in sizes:
        records = candidates[:n]
        encoded = onnx.encoder.transform_records(records)
        batch = TensorData(encoded).rows
        repeats = 2000 if n <= 100 else 300

        def onnx_model(encoded=encoded) -> None:
            onnx.score(encoded)

        def torch_model(batch=batch) -> None:
            with torch.inference_mode():
                torch.sigmoid(eager.run.model(batch))

        for what, fn in (
            ("model: ONNX Runtime", onnx_model),
            ("model: PyTorch eager", torch_model),
            ("end to end: ONNX Runtime", lambda r=records: onnx.predict_records(r)),
            ("end to end: PyTorch eager", lambda r=records: eager.predict_records(r)),
        ):
            rows.append({"candidates": n, "path": what, **timed(fn, repeats)})
            print(
                f"{n:5d} {what:28s} p50 {rows[-1]['p50_ms']:.3f} ms  p99 {rows[-1]['p99_ms']:.3f} ms",
                flush=True,
            )
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, max_candidates: int) -> subprocess.Popen:
    import httpx

    cmd = [
        sys.executable, "-c", "from mdctr.cli import main; main()", "serve", str(run),
        "--port", str(port), "--max-candidates", str(max_candidates),
    ]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not answer /health within 120 s")


class Connection:
    """One keep-alive HTTP/1.1 connection sending a pre-built request: a client light enough
    that the server, not the client, is what gets measured."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, request: bytes) -> int:
        """Send one request; return the response status after reading the whole body."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def post(port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


async def open_loop(port: int, request: bytes, rate: float, seconds: float, connections: int = 64) -> dict:
    """Send ``rate`` requests/s for ``seconds`` over a pool of connections; each latency is
    counted from the request's scheduled send time, queueing for a connection included."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(port))
    latencies: list[float] = []
    errors = 0

    async def one(at: float) -> None:
        nonlocal errors
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        conn = await pool.get()
        try:
            status = await asyncio.wait_for(conn.send(request), timeout=2.0)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            conn.close()
            conn, status = await Connection.open(port), 0
        pool.put_nowait(conn)
        if status == 200:
            latencies.append(time.perf_counter() - at)
        else:
            errors += 1

    total = int(rate * seconds)
    gc.collect()
    gc.freeze()  # a full collection over the client's own heap would pause it, not the server
    start = time.perf_counter() + 0.1
    tasks = [asyncio.ensure_future(one(start + i / rate)) for i in range(total)]
    done, pending = await asyncio.wait(tasks, timeout=seconds + 10)  # bounded in time as well
    for task in pending:
        task.cancel()
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait().close()
    return {
        "rate": rate,
        "requests": total,
        "errors": errors + len(pending),
        "throughput_rps": len(latencies) / elapsed,
        **(percentiles(latencies) if latencies else {"p50_ms": float("nan"), "p99_ms": float("nan")}),
    }


def load_test(run: Path, candidates: list[dict], rates: list[float], seconds: float) -> list[dict]:
    port = free_port()
    request = post(port, "/predict", json.dumps({"candidates": candidates}).encode())
    server = start_server(run, port, max_candidates=len(candidates))
    rows = []
    try:
        asyncio.run(open_loop(port, request, 50, 2))  # warm-up
        for rate in rates:
            row = asyncio.run(open_loop(port, request, rate, seconds))
            rows.append(row)
            print(
                f"{rate:6.0f} req/s offered: {row['throughput_rps']:7.1f} served, errors {row['errors']}, "
                f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms",
                flush=True,
            )
            if row["errors"] or row["throughput_rps"] < 0.9 * rate:
                break
    finally:
        server.terminate()
        server.wait(timeout=20)
    return rows


def markdown(info: dict, latency: list[dict], http: list[dict]) -> str:
    ok = [r for r in http if not r["errors"] and r["throughput_rps"] >= 0.9 * r["rate"]]
    best = max(ok, key=lambda r: r["rate"]) if ok else None
    out = [
        "# Serving benchmark",
        "",
        f"Run: {info['run']} ({info['model']}, {info['domains']} domains). Machine: {info['machine']}, "
        f"{info['cores']} cores, shared. Command: `python benchmarks/serving.py`.",
        "",
        "## In-process latency, 1 thread",
        "",
        "| candidates | path | p50 ms | p99 ms |",
        "|---|---|---|---|",
        *(f"| {r['candidates']} | {r['path']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |" for r in latency),
        "",
        f"## HTTP, {info['http_candidates']} candidates per request (open loop, {info['seconds']} s per rate)",
        "",
        "The server (`mdctr serve`, ONNX Runtime, 1 thread, one uvicorn worker) and the client share the "
        "machine's cores.",
        "",
        "| offered req/s | served req/s | candidates/s | errors | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['rate']:.0f} | {r['throughput_rps']:.1f} | {r['throughput_rps'] * info['http_candidates']:,.0f} "
            f"| {r['errors']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
            for r in http
        ),
        "",
    ]
    if best:
        out.append(
            f"Highest rate sustained without errors: {best['rate']:.0f} req/s "
            f"({best['rate'] * info['http_candidates']:,.0f} candidates/s), p99 {best['p99_ms']:.2f} ms."
        )
    fast = [r for r in ok if r["p99_ms"] <= 10]
    if fast:
        top = max(fast, key=lambda r: r["rate"])
        out.append(f"Highest rate with p99 <= 10 ms: {top['rate']:.0f} req/s, p99 {top['p99_ms']:.2f} ms.")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, default=None, help="a run directory; default: train one")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[100, 200, 400, 600, 800, 1000, 1200, 1500, 2000, 2500]
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="per rate (bounded: rate x seconds requests)"
    )
    parser.add_argument("--http-candidates", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            overrides = ("train.recipe=joint", "train.epochs=1", "name=serving-ml1m-age-mlora")
            experiment = load_experiment(CONFIGS / "ml1m-age-mlora.yaml", overrides)
            run = Path(tmp) / "run"
            train_experiment(experiment, run)
        predictor = Predictor(run, backend="torch")
        frame = prepare(predictor.run.experiment.data).test.head(max(args.sizes + [args.http_candidates]))
        candidates = frame.drop(predictor.encoder.schema.labels).to_dicts()
        experiment = predictor.run.experiment
        info = {
            "run": experiment.name,
            "model": f"{experiment.model.multidomain}@{experiment.model.backbone}",
            "domains": len(predictor.domains),
            "machine": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "http_candidates": args.http_candidates,
            "seconds": args.seconds,
        }
        latency = in_process(run, candidates, args.sizes)
        http = load_test(run, candidates[: args.http_candidates], args.rates, args.seconds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serving.json").write_text(
        json.dumps({**info, "latency": latency, "http": http}, indent=1) + "\n"
    )
    (RESULTS / "serving.md").write_text(markdown(info, latency, http))


if __name__ == "__main__":
    main()
