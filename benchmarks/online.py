"""The online layer on its seeded simulators: delayed-feedback experiments, GSP / VCG / EdgeNet
auctions, and the speed of 1e6 simulated auctions.

    python benchmarks/online.py                                  # everything, ~30 min on 2 cores
    python benchmarks/online.py --run runs/demo-ml1m-gender      # also auctions over real pCTR
    python benchmarks/online.py --quick                          # a smoke run

(a) Experiments: three arms (4 %, 4.5 %, 5 % conversion), 100 users per hourly step for two weeks,
conversions a day late on average: exponential delays, and heavy-tailed Lomax delays (shape 1.5:
finite mean, infinite variance) judged with the nonparametric delay model. Every policy at
stopping thresholds 0.9 / 0.95 / 0.99 on the same ``--seeds`` seeds: error rate (Wilson 95 %
interval), regret (mean, 95 % interval), decision step. "At equal error rate": each policy's
regret interpolated (linearly in error rate, between its thresholds) at the error rates the
split test reaches.

(b) Auctions: 3 slots from 5 ads and 5 organic items, 4 categories, externality 0.3, virtual bid 1;
``--auction-seeds`` seeds, each with its own evaluation auctions and its own EdgeNet trained on
separate simulated auctions. Per mechanism: revenue, welfare, user value, the blended objective,
the ads' share of slots (means over seeds with 95 % intervals), and the IC violation found by
searching 41 misreports of every ad in ``--ic-auctions`` auctions (the largest over all seeds).
Then a virtual-bid sweep (GSP, VCG), and with ``--run`` the same comparison over candidates a
trained run scores (MovieLens users x movies, categories = first genre).

(c) Speed: simulating 1e6 auctions of 10 candidates and running GSP and VCG on them, in one
process; the learned auction's rate on 20k auctions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from streaming import cpu_flags, matmul_probe  # noqa: E402

from mdctr import __version__  # noqa: E402
from mdctr.online import auction as A  # noqa: E402
from mdctr.online import edgenet  # noqa: E402
from mdctr.online.blend import compare as compare_auctions  # noqa: E402
from mdctr.online.config import AuctionConfig, ExperimentConfig, parse  # noqa: E402
from mdctr.online.experiment import interval, run, summary  # noqa: E402
from mdctr.runs import git_commit  # noqa: E402

RESULTS = Path(__file__).parent / "results"
THRESHOLDS = (0.9, 0.95, 0.99)
SCENARIOS = {
    "exponential": {"delay": {"kind": "exponential", "mean": 24}, "delay_model": "exponential"},
    "heavy_tailed": {"delay": {"kind": "pareto", "scale": 12, "shape": 1.5}, "delay_model": "nonparametric"},
}
AUCTION = {"slots": 3, "externality": 0.3, "virtual_bid": 1.0, "learned": {"steps": 300, "temperature": 0.03}}
WELFARE_WEIGHTS = (1.0,)
MECHANISMS = ("gsp", "vcg", "learned", *(f"learned_w{w:g}" for w in WELFARE_WEIGHTS))
MEASURES = ("revenue", "welfare", "user_value", "objective", "ad_slots", "rebates")


def experiments(seeds: int, steps: int) -> dict:
    out = {}
    for name, scenario in SCENARIOS.items():
        rows = []
        for threshold in THRESHOLDS:
            cfg = parse(
                ExperimentConfig,
                {
                    "name": name,
                    "arms": [0.04, 0.045, 0.05],
                    "users_per_step": 100,
                    "steps": steps,
                    "check_every": 24,
                    "threshold": threshold,
                    "seeds": seeds,
                    **scenario,
                },
            )
            for policy in cfg.policies:
                start = time.perf_counter()
                row = summary(run(cfg, policy)) | {"threshold": threshold}
                row["seconds"] = time.perf_counter() - start
                rows.append(row)
                print(
                    name,
                    threshold,
                    policy,
                    {k: row[k] for k in ("error_rate", "regret", "decision_step")},
                    flush=True,
                )
        out[name] = {"config": scenario, "rows": rows, "matched": matched(rows)}
    return out


def matched(rows: list[dict]) -> list[dict]:
    """Each policy's regret at the split test's error rates, interpolated between thresholds."""
    by_policy: dict[str, list[dict]] = {}
    for r in rows:
        by_policy.setdefault(r["policy"], []).append(r)
    out = []
    for target in sorted({r["error_rate"] for r in by_policy["split"]}):
        entry: dict = {"error_rate": target}
        for policy, points in by_policy.items():
            pts = sorted(points, key=lambda r: r["error_rate"])
            errors = [p["error_rate"] for p in pts]
            if not errors[0] <= target <= errors[-1]:
                entry[policy] = None
                continue
            entry[policy] = {
                "regret": float(np.interp(target, errors, [p["regret"] for p in pts])),
                "regret_ci": float(np.interp(target, errors, [p["regret_ci"] for p in pts])),
            }
        out.append(entry)
    return out


def auctions(seeds: int, n: int, ic_auctions: int, steps: int, run_dir: str | None) -> dict:
    per_seed = []
    for seed in range(seeds):
        cfg = parse(AuctionConfig, AUCTION | {"auctions": n, "ic_auctions": ic_auctions, "seed": seed})
        cfg = cfg.model_copy(update={"learned": cfg.learned.model_copy(update={"steps": steps})})
        start = time.perf_counter()
        result = compare_auctions(cfg, welfare_weights=WELFARE_WEIGHTS)
        per_seed.append(result["mechanisms"])
        print(
            f"auction seed {seed}: {time.perf_counter() - start:.0f} s",
            {m: round(r["revenue"], 4) for m, r in result["mechanisms"].items()},
            flush=True,
        )
    out = {}
    for mechanism in per_seed[0]:
        rows = [s[mechanism] for s in per_seed]
        entry = {}
        for measure in MEASURES:
            mean, half = interval(np.array([r[measure] for r in rows]))
            entry[measure], entry[f"{measure}_ci"] = mean, half
        entry["ic_violation"] = max(r["ic_violation"] for r in rows)
        entry["ic_violation_rel"] = max(r["ic_violation_rel"] for r in rows)
        entry["ic_mean"] = float(np.mean([r["ic_mean"] for r in rows]))
        entry["ic_searched"] = sum(r["ic_searched"] for r in rows)
        if mechanism.startswith("learned"):
            entry["welfare_weight"] = rows[0]["welfare_weight"]
            entry["train_seconds"] = float(np.mean([r["train_seconds"] for r in rows]))
            for key in ("alpha", "beta", "chosen_step"):
                entry[key] = [r[key] for r in rows]
        out[mechanism] = entry
    vcg, learned = (
        np.array([s["vcg"]["revenue"] for s in per_seed]),
        np.array([s["learned"]["revenue"] for s in per_seed]),
    )
    out["learned_minus_vcg_revenue"] = dict(zip(("mean", "ci"), interval(learned - vcg), strict=True))
    gsp = np.array([s["gsp"]["revenue"] for s in per_seed])
    out["learned_minus_gsp_revenue"] = dict(zip(("mean", "ci"), interval(learned - gsp), strict=True))
    out["seeds"], out["auctions_per_seed"] = seeds, n
    out["virtual_bid_sweep"] = sweep(n)
    if run_dir:
        cfg = parse(
            AuctionConfig,
            AUCTION
            | {
                "auctions": n,
                "ic_auctions": ic_auctions,
                "run": run_dir,
                "candidates": {"table": "ml1m-gender", "items": ["item_id", "genres"], "category": "genres"},
            },
        )
        cfg = cfg.model_copy(update={"learned": cfg.learned.model_copy(update={"steps": steps})})
        result = compare_auctions(cfg, welfare_weights=WELFARE_WEIGHTS)
        out["real_candidates"] = {"run": run_dir, "mean_q": result["mean_q"], **result["mechanisms"]}
    return out


def sweep(n: int) -> list[dict]:
    rows = []
    for vb in (0.0, 0.5, 1.0, 2.0, 4.0):
        cfg = parse(AuctionConfig, AUCTION | {"auctions": n, "virtual_bid": vb})
        a = A.simulate(cfg, np.random.default_rng([0, 1]))
        for name, mechanism in (("gsp", A.gsp), ("vcg", A.vcg)):
            rows.append(
                {"virtual_bid": vb, "mechanism": name, **A.outcome(a, A.chunked(mechanism, a, cfg), cfg)}
            )
    return rows


def speed(n: int) -> dict:
    cfg = parse(AuctionConfig, AUCTION | {"auctions": n})
    out: dict = {"auctions": n, "candidates": 10}
    start = time.perf_counter()
    a = A.simulate(cfg, np.random.default_rng(0))
    out["simulate_s"] = time.perf_counter() - start
    for name, mechanism in (("gsp", A.gsp), ("vcg", A.vcg)):
        start = time.perf_counter()
        A.chunked(mechanism, a, cfg)
        out[f"{name}_s"] = time.perf_counter() - start
    out["simulate_and_vcg_s"] = out["simulate_s"] + out["vcg_s"]
    small = a[:20000]
    net = edgenet.EdgeNet(cfg)
    learned = edgenet.LearnedAuction(net)
    start = time.perf_counter()
    learned(small)
    out["learned_auctions_per_s"] = len(small) / (time.perf_counter() - start)
    return out


def fmt(mean: float, ci: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {ci:.{digits}f}" if math.isfinite(ci) else f"{mean:.{digits}f}"


def report(result: dict) -> str:
    meta = result["meta"]
    lines = [
        "# The online layer: experiments with delayed feedback, blending auctions, a learned auction",
        "",
    ]
    lines += [
        f"`{meta['command']}`, {meta['date']}, mdctr {meta['mdctr']} at {meta['git_commit']}. Machine: {meta['cpu']}, flags {', '.join(meta['cpu_flags']) or 'none of avx2/avx512'}, "
        f"{meta['threads']} torch threads, matmul probe {meta['matmul_gflops']:.0f} GFLOP/s. 95 % intervals throughout.",
        "",
    ]
    lines += ["## (a) Experiments with delayed conversions", ""]
    for name, scenario in result["experiment"].items():
        lines += [
            f"### {name}: delay {scenario['config']['delay']}, delay model {scenario['config']['delay_model']}, "
            f"{result['experiment_seeds']} seeds",
            "",
        ]
        lines += [
            "| threshold | policy | error rate (Wilson CI) | regret | decided at step | decided early |",
            "|---|---|---|---|---|---|",
        ]
        for r in scenario["rows"]:
            lo, hi = r["error_ci"]
            lines.append(
                f"| {r['threshold']} | {r['policy']} | {r['error_rate']:.3f} ({lo:.3f}-{hi:.3f}) | "
                f"{fmt(r['regret'], r['regret_ci'], 1)} | {fmt(r['decision_step'], r['decision_step_ci'], 0)} | {r['decided_early']:.0%} |"
            )
        lines += [
            "",
            "Regret at the split test's error rates (interpolated between thresholds; - = outside the policy's range):",
            "",
        ]
        lines += ["| error rate | split | thompson | delay_corrected |", "|---|---|---|---|"]
        for m in scenario["matched"]:
            cells = [
                fmt(m[p]["regret"], m[p]["regret_ci"], 1) if m.get(p) else "-"
                for p in ("split", "thompson", "delay_corrected")
            ]
            lines.append(f"| {m['error_rate']:.3f} | " + " | ".join(cells) + " |")
        lines.append("")
    au = result["auction"]
    lines += ["## (b) Blending auctions: GSP, VCG, learned (EdgeNet)", ""]
    lines += [
        f"{au['seeds']} seeds x {au['auctions_per_seed']:,} auctions; IC searched on {result['ic_auctions']} auctions per seed "
        "(41 misreports x every ad); per auction means.",
        "",
    ]
    lines += [
        "| mechanism | revenue | welfare | user value (clicks) | objective | ad share of slots | IC violation (largest) | relative to revenue |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in MECHANISMS:
        r = au[m]
        lines.append(
            f"| {m} | {fmt(r['revenue'], r['revenue_ci'])} | {fmt(r['welfare'], r['welfare_ci'])} | {fmt(r['user_value'], r['user_value_ci'])} | "
            f"{fmt(r['objective'], r['objective_ci'])} | {r['ad_slots']:.3f} | {r['ic_violation']:.2e} | {r['ic_violation_rel']:.2e} |"
        )
    d, g = au["learned_minus_vcg_revenue"], au["learned_minus_gsp_revenue"]
    lines += [
        "",
        f"Learned minus VCG revenue, paired over seeds: {fmt(d['mean'], d['ci'])}; learned minus GSP: {fmt(g['mean'], g['ci'])}. "
        f"VCG rebates (an ad paid, on a full page) in {au['vcg']['rebates']:.2%} of auctions. "
        f"EdgeNet: {au['learned']['train_seconds']:.0f} s training per seed, alpha {np.mean(au['learned']['alpha']):.2f}, beta {np.mean(au['learned']['beta']):.2f} "
        f"(mean over seeds); `learned` maximises revenue, `learned_w1` revenue + the blended objective. "
        "Welfare and objective coincide at virtual bid 1.",
        "",
    ]
    lines += [
        "Virtual-bid sweep (seed 0):",
        "",
        "| virtual bid | mechanism | revenue | welfare | user value | ad share |",
        "|---|---|---|---|---|---|",
    ]
    for r in au["virtual_bid_sweep"]:
        lines.append(
            f"| {r['virtual_bid']} | {r['mechanism']} | {r['revenue']:.4f} | {r['welfare']:.4f} | {r['user_value']:.4f} | {r['ad_slots']:.3f} |"
        )
    if "real_candidates" in au:
        rc = au["real_candidates"]
        lines += [
            "",
            f"Over real candidates: `{rc['run']}` scores MovieLens users x movies (mean pCTR {rc['mean_q']:.3f}; categories = first genre), one seed:",
            "",
            "| mechanism | revenue | welfare | user value | ad share | IC violation |",
            "|---|---|---|---|---|---|",
        ]
        for m in MECHANISMS:
            r = rc[m]
            lines.append(
                f"| {m} | {r['revenue']:.4f} | {r['welfare']:.4f} | {r['user_value']:.4f} | {r['ad_slots']:.3f} | {r['ic_violation']:.2e} |"
            )
    sp = result["speed"]
    lines += [
        "",
        "## (c) Speed",
        "",
        f"{sp['auctions']:,} auctions of {sp['candidates']} candidates, one process: simulate {sp['simulate_s']:.1f} s, "
        f"GSP {sp['gsp_s']:.1f} s, VCG (every 3-of-10 set, externalities, payments) {sp['vcg_s']:.1f} s; simulate + VCG "
        f"**{sp['simulate_and_vcg_s']:.1f} s**. The learned auction (with its Myerson payments: 21 decoder passes per auction) "
        f"runs {sp['learned_auctions_per_s']:,.0f} auctions/s.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=200, help="experiment seeds per policy and threshold")
    parser.add_argument("--auction-seeds", type=int, default=10)
    parser.add_argument("--auctions", type=int, default=20000, help="evaluation auctions per seed")
    parser.add_argument("--ic-auctions", type=int, default=300)
    parser.add_argument("--run", help="an mdctr run on ml1m-gender whose pCTR scores real candidates")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps, speed_n, train_steps = 336, 1_000_000, 300
    if args.quick:
        args.seeds, args.auction_seeds, args.auctions, args.ic_auctions = 16, 2, 2000, 30
        steps, speed_n, train_steps = 168, 50_000, 30
    probe = matmul_probe(args.threads)
    result = {
        "meta": {
            "command": " ".join(["python benchmarks/online.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d"),
            "git_commit": git_commit(),
            "mdctr": __version__,
            "threads": args.threads,
            "cpu": platform.processor() or platform.machine(),
            "cpu_flags": cpu_flags(),
            "matmul_gflops": probe,
            "quick": args.quick,
        },
        "experiment_seeds": args.seeds,
        "ic_auctions": args.ic_auctions,
    }
    result["speed"] = speed(speed_n)
    print(result["speed"], flush=True)
    result["experiment"] = experiments(args.seeds, steps)
    result["auction"] = auctions(args.auction_seeds, args.auctions, args.ic_auctions, train_steps, args.run)
    result["meta"]["matmul_gflops_end"] = matmul_probe(args.threads)
    text = report(result)
    suffix = "-quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"online{suffix}.md").write_text(text)
    (RESULTS / f"online{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
