"""Blending sponsored and organic items on a page of K slots: GSP, VCG with externalities and
virtual bids, and the measurement of incentive compatibility by searching for misreports.

The click model (known to every mechanism, as a deployed CTR model is): candidate ``i`` shown in
slot ``k`` beside ``m_i`` other items of its category is clicked with probability
``q_i * position_k * (1 - externality) ** m_i``. An ad's score per click is its bid; an organic
item's is its *virtual bid*, ``virtual_bid * value`` (the platform's value of an organic click,
weighted), so one objective ranks both (Xu et al., JD). VCG allocates the page that maximises the
total score and charges each ad the score its presence costs the others; GSP ranks by score times
``q`` as if there were no externalities and charges each ad the next candidate's rank score.
Everything is batched over auctions with numpy.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from mdctr.online.config import AuctionConfig

CHUNK = 4096


@dataclass(frozen=True)
class Auctions:
    """B auctions of n candidates: ``q`` base CTR, ``value`` true value per click (an ad's to its
    advertiser, an organic item's to the platform), ``bid`` what each candidate reports (ads) or
    the platform's virtual bid (organic), ``ad`` sponsored or not, ``category`` ints."""

    q: np.ndarray
    value: np.ndarray
    bid: np.ndarray
    ad: np.ndarray
    category: np.ndarray

    def __len__(self) -> int:
        return len(self.q)

    def __getitem__(self, rows: slice | np.ndarray) -> Auctions:
        return Auctions(*(a[rows] for a in (self.q, self.value, self.bid, self.ad, self.category)))


@dataclass(frozen=True)
class Page:
    """The outcome of B auctions: candidate per slot ``slots (B, K)``, its CTR on that page, and
    what it pays per auction (zero for organic items)."""

    slots: np.ndarray
    ctr: np.ndarray
    pay: np.ndarray


Mechanism = Callable[[Auctions], Page]


def simulate(
    cfg: AuctionConfig,
    rng: np.random.Generator,
    q: np.ndarray | None = None,
    category: np.ndarray | None = None,
) -> Auctions:
    """``cfg.auctions`` auctions with lognormal values; ``q`` and ``category`` (B, n) from a CTR
    model's candidates, or drawn (q ~ Beta(2, 30), uniform categories)."""
    b, ads, organic = cfg.auctions, cfg.bidders.ads, cfg.bidders.organic
    n = ads + organic
    if q is None:
        q = rng.beta(2.0, 30.0, (b, n))
    b = len(q)
    sigma = cfg.bidders.bid_sigma
    scale = np.exp(-(sigma**2) / 2)
    ad_value = cfg.bidders.bid_mean * scale * rng.lognormal(0.0, sigma, (b, ads))
    organic_value = cfg.bidders.organic_value * scale * rng.lognormal(0.0, sigma, (b, organic))
    value = np.concatenate([ad_value, organic_value], 1)
    ad = np.zeros((b, n), bool)
    ad[:, :ads] = True
    bid = np.where(ad, value, cfg.virtual_bid * value)
    if category is None:
        category = rng.integers(0, cfg.bidders.categories, (b, n))
    return Auctions(q, value, bid, ad, category)


def page_ctr(a: Auctions, slots: np.ndarray, cfg: AuctionConfig) -> np.ndarray:
    """CTR of each shown candidate ``(B, K)`` on the page ``slots``."""
    rows = np.arange(len(a))[:, None]
    cat = a.category[rows, slots]
    others = (cat[:, :, None] == cat[:, None, :]).sum(-1) - 1
    return a.q[rows, slots] * np.asarray(cfg.factors) * (1 - cfg.externality) ** others


def _combos(n: int, k: int) -> np.ndarray:
    return np.array(list(itertools.combinations(range(n), k)), dtype=np.int64)


def _best_pages(a: Auctions, cfg: AuctionConfig) -> tuple[np.ndarray, np.ndarray]:
    """The total score of every set of K candidates in its best order, and the best page:
    (scores (B, C), slots (B, K)). Within a set the CTR discount of the externality does not
    depend on the order, so the best order sorts ``q * score * discount`` down the
    (non-increasing) slots; only the winning set is ordered explicitly."""
    combos = _combos(a.q.shape[1], cfg.slots)
    cat = a.category[:, combos]
    others = (cat[..., :, None] == cat[..., None, :]).sum(-1) - 1
    discount = (1 - cfg.externality) ** np.arange(cfg.slots)
    worth = (a.q * a.bid)[:, combos] * discount[others]
    score = np.sort(worth, -1)[..., ::-1] @ np.asarray(cfg.factors)
    rows = np.arange(len(a))
    best = score.argmax(-1)
    order = np.argsort(-worth[rows, best], -1, kind="stable")
    return score, np.take_along_axis(combos[best], order, -1)


def vcg(a: Auctions, cfg: AuctionConfig) -> Page:
    """The score-maximising page; each ad pays (best total of the others without it) minus (the
    others' total on the chosen page). Pages are always full, so the payment can be negative
    (a rebate): an ad whose slot would go to an item that discounts its neighbours' CTRs more
    than it adds. Clamping it at zero would break truthfulness."""
    score, slots = _best_pages(a, cfg)
    combos = _combos(a.q.shape[1], cfg.slots)
    rows = np.arange(len(a))
    ctr = page_ctr(a, slots, cfg)
    member = np.zeros((len(combos), a.q.shape[1]), bool)
    member[np.arange(len(combos))[:, None], combos] = True
    holds = member[:, slots].transpose(1, 0, 2)
    without = np.where(holds, -np.inf, score[:, :, None]).max(1)
    others_total = score.max(-1)[:, None] - ctr * a.bid[rows[:, None], slots]
    pay = without - others_total
    return Page(slots, ctr, np.where(a.ad[rows[:, None], slots], pay, 0.0))


def gsp(a: Auctions, cfg: AuctionConfig) -> Page:
    """Rank by ``bid * q``; an ad in slot k pays per click the next candidate's rank score over
    its own ``q`` (the lowest bid that keeps its slot), times its CTR on the page."""
    rank = a.bid * a.q
    order = np.argsort(-rank, -1, kind="stable")
    slots = order[:, : cfg.slots]
    rows = np.arange(len(a))[:, None]
    ranked = np.take_along_axis(rank, order, -1)
    next_rank = np.concatenate([ranked[:, 1:], np.zeros((len(a), 1))], 1)[:, : cfg.slots]
    ctr = page_ctr(a, slots, cfg)
    price = next_rank / a.q[rows, slots]
    return Page(slots, ctr, np.where(a.ad[rows, slots], ctr * price, 0.0))


def chunked(mechanism: Callable[[Auctions, AuctionConfig], Page], a: Auctions, cfg: AuctionConfig) -> Page:
    """``mechanism`` over ``a`` in chunks of CHUNK auctions (bounded memory for any B)."""
    parts = [mechanism(a[start : start + CHUNK], cfg) for start in range(0, len(a), CHUNK)]
    return Page(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("slots", "ctr", "pay")))


def outcome(a: Auctions, page: Page, cfg: AuctionConfig) -> dict[str, float]:
    """Per-auction means: revenue (ads' payments), welfare (true value of every click: the
    advertisers' and the platform's organic value), user value (expected clicks), the blended
    objective (values with organic clicks at their virtual bids), the ads' share of slots and the
    share of auctions that pay an ad (a negative payment)."""
    rows = np.arange(len(a))[:, None]
    ad = a.ad[rows, page.slots]
    value = a.value[rows, page.slots]
    worth = np.where(ad, value, cfg.virtual_bid * value)
    return {
        "revenue": float(page.pay.sum(1).mean()),
        "welfare": float((page.ctr * value).sum(1).mean()),
        "user_value": float(page.ctr.sum(1).mean()),
        "objective": float((page.ctr * worth).sum(1).mean()),
        "ad_slots": float(ad.mean()),
        "rebates": float((page.pay < 0).any(1).mean()),
    }


def utilities(a: Auctions, page: Page) -> np.ndarray:
    """Each candidate's expected utility ``(B, n)``: CTR times true value minus payment, for ads
    on the page; zero otherwise."""
    rows = np.arange(len(a))[:, None]
    u = np.zeros(a.q.shape)
    u[rows, page.slots] = page.ctr * a.value[rows, page.slots] - page.pay
    return np.where(a.ad, u, 0.0)


def misreport_gain(mechanism: Mechanism, a: Auctions, grid: np.ndarray) -> np.ndarray:
    """The largest utility gain ``(B, n_ads)`` each ad finds by reporting ``value * g`` for ``g``
    in ``grid`` instead of its value, all other reports truthful (zero where truth is best)."""
    truthful = utilities(a, mechanism(a))
    ads = np.flatnonzero(a.ad[0])
    b, g = len(a), len(grid)
    best = np.zeros((b, len(ads)))
    for j, i in enumerate(ads):
        tiled = a[np.repeat(np.arange(b), g)]
        bid = tiled.bid.copy()
        bid[:, i] = tiled.value[:, i] * np.tile(grid, b)
        lied = replace(tiled, bid=bid)
        u = utilities(lied, mechanism(lied))[:, i].reshape(b, g)
        best[:, j] = np.maximum(u.max(1) - truthful[:, i], 0.0)
    return best


def ic_report(mechanism: Mechanism, a: Auctions, points: int) -> dict[str, float]:
    """IC violation found by search: the largest gain any ad gets by misreporting (absolute, and
    relative to the mechanism's mean revenue per auction) and the mean of each auction's largest."""
    grid = np.unique(np.concatenate([np.linspace(0.0, 3.0, points), [1.0]]))
    gain = misreport_gain(mechanism, a, grid)
    revenue = float(mechanism(a).pay.sum(1).mean())
    largest = float(gain.max())
    return {
        "ic_violation": largest,
        "ic_violation_rel": largest / revenue if revenue > 0 else float("inf"),
        "ic_mean": float(gain.max(1).mean()),
        "ic_searched": int(gain.size),
    }
