"""The auction comparison: GSP, VCG and the learned EdgeNet auction on the same auctions, with
revenue, welfare, user value and the incentive compatibility found by search."""

from __future__ import annotations

import time

import numpy as np

from mdctr.online import auction
from mdctr.online.config import AuctionConfig

MECHANISMS = ("gsp", "vcg", "learned")


def measure(mechanism: auction.Mechanism, a: auction.Auctions, cfg: AuctionConfig) -> dict:
    """Outcome means, the IC search on the first ``cfg.ic_auctions`` auctions, and seconds."""
    start = time.perf_counter()
    page = mechanism(a)
    seconds = time.perf_counter() - start
    ic = auction.ic_report(mechanism, a[: cfg.ic_auctions], cfg.ic_grid)
    return {**auction.outcome(a, page, cfg), **ic, "seconds": seconds}


def compare(cfg: AuctionConfig, log: bool = False, welfare_weights: tuple[float, ...] = ()) -> dict:
    """Simulate (or score, with ``cfg.run``) the auctions, train EdgeNet on separate ones, and
    measure every mechanism on the same evaluation auctions; each of ``welfare_weights`` adds
    an EdgeNet trained with that weight (``learned_w<weight>``)."""
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
    mechanisms: dict[str, auction.Mechanism] = {
        "gsp": lambda x: auction.chunked(auction.gsp, x, cfg),
        "vcg": lambda x: auction.chunked(auction.vcg, x, cfg),
    }
    trained, curves = {}, {}
    for name, weight in (
        ("learned", cfg.learned.welfare_weight),
        *((f"learned_w{w:g}", w) for w in welfare_weights),
    ):
        variant = cfg.model_copy(
            update={"learned": cfg.learned.model_copy(update={"welfare_weight": weight})}
        )
        start = time.perf_counter()
        net, curves[name] = edgenet.train(variant, pool, log)
        chosen = next(p for p in curves[name] if p["best_so_far"] == curves[name][-1]["best_so_far"])
        mechanisms[name] = edgenet.LearnedAuction(net)
        trained[name] = {
            "welfare_weight": weight,
            "train_seconds": time.perf_counter() - start,
            "alpha": chosen["alpha"],
            "beta": chosen["beta"],
            "chosen_step": chosen["step"],
        }
    rows = {name: measure(m, a, cfg) | trained.get(name, {}) for name, m in mechanisms.items()}
    return {
        "config": cfg.model_dump(mode="json"),
        "candidates": "run" if cfg.run else "simulated",
        "mean_q": float(a.q.mean()),
        "mechanisms": rows,
        "training": curves,
    }
