"""The auction comparison: GSP, VCG and the learned EdgeNet auction on the same auctions, with
revenue, welfare, user value and the incentive compatibility found by search."""

from __future__ import annotations

import time

import numpy as np

from mdctr.online import auction
from mdctr.online.config import AuctionConfig

MECHANISMS = ("gsp", "vcg", "learned")


def _measure(mechanism: auction.Mechanism, a: auction.Auctions, cfg: AuctionConfig) -> dict:
    start = time.perf_counter()
    page = mechanism(a)
    seconds = time.perf_counter() - start
    ic = auction.ic_report(mechanism, a[: cfg.ic_auctions], cfg.ic_grid)
    return {**auction.outcome(a, page, cfg), **ic, "seconds": seconds}


def compare(cfg: AuctionConfig, log: bool = False) -> dict:
    """Simulate (or score, with ``cfg.run``) the auctions, train EdgeNet on separate ones, and
    measure every mechanism on the same evaluation auctions."""
    from mdctr.online import edgenet

    rng = np.random.default_rng([cfg.seed, 1])
    pool = None
    if cfg.run is not None:
        from mdctr.online.candidates import read_candidates, score_candidates

        both = cfg.model_copy(update={"auctions": 2 * cfg.auctions})
        q, category = score_candidates(cfg.run, read_candidates(cfg.candidates), both, rng)  # type: ignore[arg-type]
        pool = (q[: cfg.auctions], category[: cfg.auctions])
        a = auction.simulate(cfg, rng, q[cfg.auctions :], category[cfg.auctions :])
    else:
        a = auction.simulate(cfg, rng)
    start = time.perf_counter()
    net, curve = edgenet.train(cfg, pool, log)
    train_seconds = time.perf_counter() - start
    mechanisms: dict[str, auction.Mechanism] = {
        "gsp": lambda x: auction.chunked(auction.gsp, x, cfg),
        "vcg": lambda x: auction.chunked(auction.vcg, x, cfg),
        "learned": edgenet.LearnedAuction(net),
    }
    rows = {name: _measure(m, a, cfg) for name, m in mechanisms.items()}
    rows["learned"] |= {
        "train_seconds": train_seconds,
        "alpha": curve[-1]["alpha"],
        "beta": curve[-1]["beta"],
    }
    return {
        "config": cfg.model_dump(mode="json"),
        "candidates": "run" if cfg.run else "simulated",
        "mean_q": float(a.q.mean()),
        "mechanisms": rows,
        "training": curve,
    }
