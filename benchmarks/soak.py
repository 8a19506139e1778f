"""Soak test: `mdctr serve` under sustained load with abusive traffic mixed in, on loopback.

    python benchmarks/soak.py                      # trains a 1-epoch ml1m-age MLoRA run first
    python benchmarks/soak.py --run runs/my-run --seconds 60

A short ramp (open loop, good requests of 100 candidates) finds the highest rate the server
sustains on this machine; the soak then runs at that rate for ``--seconds``. One request in ten
is malformed (bad JSON, wrong types, a missing field, too many candidates, invalid UTF-8, deep
nesting, an oversized body), and slow clients hold connections open the whole time: some send
half a request and trickle one byte per second, some connect and send nothing. Reported: requests
by status, p50/p99 of the good requests (from their scheduled send time), the server's RSS at the
start, its peak and at the end. Bounded in requests and time. Writes ``results/soak.md``, ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from serving import (  # noqa: E402  (the serving benchmark's server start and client)
    CONFIGS,
    RESULTS,
    free_port,
    open_loop,
    percentiles,
    post,
    start_server,
)
from streaming import cpu_flags, matmul_probe  # noqa: E402

from mdctr.config import load_experiment  # noqa: E402
from mdctr.data.table import prepare  # noqa: E402
from mdctr.pipeline import train_experiment  # noqa: E402
from mdctr.predictor import Predictor  # noqa: E402

SLOW_CLIENTS = 32  # half trickle a partial body (408 at the body deadline), half send nothing (closed)
ABUSE_SHARE = 10  # one request in this many is malformed


def abusive_bodies(candidates: list[dict], max_candidates: int, field: str) -> dict[str, tuple[bytes, str]]:
    """Malformed requests by name: (body, content type); ``field`` is an id feature."""
    good = candidates[0]
    one = lambda row: json.dumps({"candidates": [row]}).encode()  # noqa: E731
    return {
        "bad JSON": (b'{"candidates": [{"user": ', "application/json"),
        "wrong type": (one({**good, field: {"id": 1}}), "application/json"),
        "missing field": (one({k: v for k, v in good.items() if k != next(iter(good))}), "application/json"),
        "too many candidates": (json.dumps({"candidates": [good] * (max_candidates + 1)}).encode(), "application/json"),
        "invalid UTF-8": (b'{"candidates": [{"a": "\xff\xfe"}]}', "application/json"),
        "deep nesting": (b'{"candidates": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "application/json"),
        "oversized body": (b" " * (max_candidates * 8192 + 1), "application/json"),
        "not JSON content": (b"candidates=1", "text/plain"),
    }  # fmt: skip


def request_bytes(port: int, body: bytes, kind: str) -> bytes:
    return post(port, "/predict", body).replace(b"application/json", kind.encode(), 1)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Status and whether the server closes the connection after it."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next((int(x.split(b":", 1)[1]) for x in lines if x.startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    return int(head[9:12]), any(x.startswith(b"connection:") and b"close" in x for x in lines)


async def slow_client(port: int, trickle: bool, stop: asyncio.Event) -> str:
    """Hold a connection: send a partial request and a byte a second, or nothing at all; what
    the server did about it."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return "refused"
    outcome = "held open to the end"
    head = b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{"
    try:
        if trickle:
            writer.write(head)
        while not stop.is_set():
            if trickle:
                writer.write(b" ")
                await writer.drain()
            with contextlib.suppress(TimeoutError):
                answer = await asyncio.wait_for(reader.read(64), timeout=1.0)
                if not answer:
                    return "closed by the server"
                return f"answered {answer[9:12].decode()} by the server"
    except (ConnectionError, OSError):
        outcome = "closed by the server"
    finally:
        writer.close()
    return outcome


def rss_mb(pid: int) -> tuple[float, float]:
    """The process's resident set and its peak, MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def soak(
    port: int, pid: int, good: bytes, abuse: dict[str, bytes], rate: float, seconds: float
) -> dict:
    """Open loop at ``rate`` for ``seconds``: every ABUSE_SHARE-th request malformed (in turn),
    slow clients throughout, the server's RSS sampled every second."""
    names = list(abuse)
    stop = asyncio.Event()
    slow = [asyncio.ensure_future(slow_client(port, i % 2 == 0, stop)) for i in range(SLOW_CLIENTS)]
    status: Counter[str] = Counter()
    by_kind: dict[str, Counter[int]] = {name: Counter() for name in ["good", *names]}
    latencies: list[float] = []
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(48):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    rss_samples = [rss_mb(pid)]

    async def sample() -> None:
        while not stop.is_set():
            await asyncio.sleep(1.0)
            rss_samples.append(rss_mb(pid))

    async def one(i: int, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        kind = names[(i // ABUSE_SHARE) % len(names)] if i % ABUSE_SHARE == ABUSE_SHARE - 1 else "good"
        reader, writer = await pool.get()
        try:
            writer.write(good if kind == "good" else abuse[kind])
            code, close = await asyncio.wait_for(read_response(reader), timeout=5.0)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as err:
            code, close = 0, True
            status[f"no response ({type(err).__name__})"] += 1
        if close:
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        pool.put_nowait((reader, writer))
        if code:
            status[str(code)] += 1
            by_kind[kind][code] += 1
        if kind == "good" and code == 200:
            latencies.append(time.perf_counter() - at)

    total = int(rate * seconds)
    gc.collect()
    gc.freeze()
    sampler = asyncio.ensure_future(sample())
    start = time.perf_counter() + 0.1
    tasks = [asyncio.ensure_future(one(i, start + i / rate)) for i in range(total)]
    done, pending = await asyncio.wait(tasks, timeout=seconds + 30)
    for task in pending:
        task.cancel()
    elapsed = time.perf_counter() - start
    stop.set()
    slow_outcomes = Counter(await asyncio.gather(*slow))
    await sampler
    while not pool.empty():
        pool.get_nowait()[1].close()
    good_n = sum(by_kind["good"].values())
    return {
        "rate": rate,
        "seconds": seconds,
        "requests": total,
        "unfinished": len(pending),
        "by_status": dict(sorted(status.items())),
        "by_kind": {k: {str(c): n for c, n in sorted(v.items())} for k, v in by_kind.items()},
        "good": {"requests": good_n, "ok": len(latencies), "throughput_rps": len(latencies) / elapsed, **percentiles(latencies)},
        "slow_clients": dict(slow_outcomes),
        "rss_mb": {"start": rss_samples[0][0], "peak": max(r for r, _ in rss_samples), "end": rss_samples[-1][0]},
    }  # fmt: skip


def markdown(info: dict, ramp: list[dict], result: dict) -> str:
    rss = result["rss_mb"]
    fives = sum(n for code, n in result["by_status"].items() if code.startswith("5"))
    kinds = "\n".join(
        f"| {kind} | {', '.join(f'{c}: {n:,}' for c, n in counts.items()) or '-'} |"
        for kind, counts in result["by_kind"].items()
    )
    return "\n".join([
        "# Soak test: the server under load with abusive traffic",
        "",
        f"Run: {info['run']} ({info['model']}). Machine: {info['machine']}, {info['cores']} cores; server "
        f"(`mdctr serve`, ONNX Runtime, 1 thread, one uvicorn worker) and client share them. CPU flags: "
        f"{', '.join(info['cpu_flags'])}; matmul probe {info['gflops_1_thread']:.0f} GFLOP/s on 1 thread "
        f"(1024x256x256 fp32); load average before {info['load_average'][0]:.2f}. "
        f"Command: `python benchmarks/soak.py --seconds {result['seconds']:.0f}`.",
        "",
        f"Ramp (good requests of {info['candidates']} candidates, {info['ramp_seconds']:.0f} s per rate): "
        + ", ".join(f"{r['rate']:.0f} -> {r['throughput_rps']:.0f} req/s ({r['errors']} errors)" for r in ramp)
        + f". Soak rate: {result['rate']:.0f} req/s, the highest the ramp sustained (no errors, 98 % of the "
        "offered rate served, p99 < 100 ms).",
        "",
        f"Soak: {result['requests']:,} requests in {result['seconds']:.0f} s, one in {ABUSE_SHARE} malformed, "
        f"{SLOW_CLIENTS} slow clients holding connections (half trickling a partial body at 1 byte/s, "
        f"half silent). The server answers a body that has not arrived 10 s after the request started "
        f"with 408 and closes a connection whose headers have not arrived 10 s after it opened.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests by status | {', '.join(f'{c}: {n:,}' for c, n in result['by_status'].items())} |",
        f"| 5xx responses | {fives} |",
        f"| good requests served | {result['good']['ok']:,} of {result['good']['requests']:,} "
        f"({result['good']['throughput_rps']:.0f} req/s) |",
        f"| good requests p50 / p99 | {result['good']['p50_ms']:.2f} / {result['good']['p99_ms']:.2f} ms |",
        f"| server RSS start / peak / end | {rss['start']:.0f} / {rss['peak']:.0f} / {rss['end']:.0f} MB "
        f"(growth {rss['end'] - rss['start']:+.1f} MB) |",
        f"| slow clients | {', '.join(f'{k}: {n}' for k, n in result['slow_clients'].items())} |",
        f"| unfinished at the time bound | {result['unfinished']} |",
        "",
        "| request kind | responses by status |",
        "|---|---|",
        kinds,
        "",
    ])  # fmt: skip


def sustained(row: dict) -> bool:
    """A ramp step the server kept up with: no errors, 98 % of the offered rate, p99 under 100 ms."""
    return not row["errors"] and row["throughput_rps"] >= 0.98 * row["rate"] and row["p99_ms"] < 100


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, default=None, help="a run directory; default: train one")
    parser.add_argument("--seconds", type=float, default=60.0, help="soak length (bounded)")
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[100, 150, 200, 250, 300, 350, 400, 500, 600, 800, 1000, 1200],
    )
    parser.add_argument("--ramp-seconds", type=float, default=3.0)
    parser.add_argument("--candidates", type=int, default=100)
    args = parser.parse_args()
    probe = matmul_probe(1)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            overrides = ("train.recipe=joint", "train.epochs=1", "name=soak-ml1m-age-mlora")
            run = Path(tmp) / "run"
            train_experiment(load_experiment(CONFIGS / "ml1m-age-mlora.yaml", overrides), run)
        predictor = Predictor(run, backend="torch")
        experiment = predictor.run.experiment
        frame = prepare(experiment.data).test.head(args.candidates)
        candidates = frame.drop(predictor.encoder.schema.labels).to_dicts()
        port = free_port()
        good = post(port, "/predict", json.dumps({"candidates": candidates}).encode())
        abuse = {
            k: request_bytes(port, b, t)
            for k, (b, t) in abusive_bodies(
                candidates, args.candidates, predictor.encoder.categorical[0]
            ).items()
        }
        server = start_server(run, port, max_candidates=args.candidates)
        try:
            asyncio.run(open_loop(port, good, 50, 2))  # warm-up
            ramp = []
            for rate in args.rates:
                ramp.append(asyncio.run(open_loop(port, good, rate, args.ramp_seconds)))
                print(
                    f"ramp {rate:.0f}: {ramp[-1]['throughput_rps']:.0f} req/s, {ramp[-1]['errors']} errors",
                    flush=True,
                )
                if not sustained(ramp[-1]):
                    break
            held = [r for r in ramp if sustained(r)]
            rate = max((r["rate"] for r in held), default=args.rates[0])
            result = asyncio.run(soak(port, server.pid, good, abuse, rate, args.seconds))
            assert server.poll() is None, "the server died during the soak"
        finally:
            server.terminate()
            server.wait(timeout=20)
    info = {
        "run": experiment.name,
        "model": f"{experiment.model.multidomain}@{experiment.model.backbone}",
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "candidates": args.candidates,
        "ramp_seconds": args.ramp_seconds,
        "cpu_flags": cpu_flags(),
        "gflops_1_thread": probe,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps({**info, "ramp": ramp, **result}, indent=1) + "\n")
    (RESULTS / "soak.md").write_text(markdown(info, ramp, result))


if __name__ == "__main__":
    main()
