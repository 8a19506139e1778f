"""EdgeNet: a learned encoder-decoder auction for a page of ads and organic items.

After Zhang et al. (EdgeNet): a transformer encoder reads the whole candidate set, and an
autoregressive decoder fills the slots one at a time, each step scoring the remaining candidates
in the context of what is already on the page. The rank score of candidate ``i`` at step ``k`` is

    s_ik = log q_i + log d_ik + g(h_i, state_k) + (alpha * log bid_i + beta   if i is an ad,
                                                    log virtual_bid_i          if organic)

with ``d_ik`` the externality discount of the items already placed, ``h_i`` the encoder's
output and ``state_k`` the placed items. Incentive compatibility is built in, not hoped for:
ads' bids never enter the encoder or the state, and ``alpha > 0``, so an ad's slot only improves
as it bids more and no other score depends on its bid. Payments follow Myerson's lemma from the
*i-removed* pass: the decoder run without ad ``i`` gives, at every step, the lowest bid at which
``i`` would take that step, and ``i`` pays ``b x(b) - integral_0^b x(z) dz`` for the clicks
``x`` it gets at each bid (the same network, no separate approximation). The only possible IC
leak is a click curve that falls as the bid rises (a better slot beside more items of the same
category); ``ic_report`` measures it.

Training maximises expected revenue plus ``welfare_weight`` times the blended objective on
simulated auctions with a softmax relaxation of each decoding step (temperature ``tau``) and the
same ladder of critical bids; evaluation is exact, with hard allocation.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mdctr.online.auction import CHUNK, Auctions, Page, outcome, page_ctr, simulate
from mdctr.online.config import AuctionConfig, LearnedConfig

EPS = 1e-12
ALPHA_FLOOR = 1e-3


@dataclass
class _Batch:
    """Auctions as tensors: ``static`` the bid-free part of every score and ``bid_term`` the
    rest, ``same`` whether two candidates share a category."""

    q: torch.Tensor
    bid: torch.Tensor
    worth: torch.Tensor
    ad: torch.Tensor
    cat: torch.Tensor
    same: torch.Tensor
    features: torch.Tensor


class EdgeNet(nn.Module):
    """Encoder over the candidates, autoregressive scorer over the slots."""

    def __init__(self, cfg: AuctionConfig) -> None:
        super().__init__()
        lc = cfg.learned
        self.cfg = cfg
        self.categories = cfg.bidders.categories
        d = lc.dim
        self.embed = nn.Linear(3 + self.categories, d)
        layer = nn.TransformerEncoderLayer(d, lc.heads, 2 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, lc.layers, enable_nested_tensor=False)
        self.slot = nn.Embedding(cfg.slots, d)
        self.scorer = nn.Sequential(nn.Linear(2 * d + 1, d), nn.ReLU(), nn.Linear(d, 1))
        nn.init.zeros_(self.scorer[-1].weight)
        nn.init.zeros_(self.scorer[-1].bias)
        self.raw_alpha = nn.Parameter(torch.tensor(math.log(math.expm1(1 - ALPHA_FLOOR))))  # alpha = 1
        self.beta = nn.Parameter(torch.zeros(()))
        self.log_keep = math.log(1 - cfg.externality) if cfg.externality > 0 else 0.0
        self.factors = torch.tensor(cfg.factors)

    @property
    def alpha(self) -> torch.Tensor:
        return nn.functional.softplus(self.raw_alpha) + ALPHA_FLOOR

    def batch(self, a: Auctions) -> _Batch:
        """Tensors of ``a`` in this network's dtype; the features hold no ad's bid."""
        dtype = self.beta.dtype
        q = torch.as_tensor(a.q, dtype=dtype)
        bid = torch.as_tensor(a.bid, dtype=dtype)
        ad = torch.as_tensor(a.ad)
        cat = torch.as_tensor(a.category, dtype=torch.long)
        worth = torch.where(ad, torch.as_tensor(a.value, dtype=dtype), bid)
        organic_bid = torch.where(ad, torch.zeros_like(bid), torch.log(bid + EPS))
        onehot = nn.functional.one_hot(cat, self.categories).to(dtype)
        features = torch.cat(
            [torch.log(q)[..., None], ad[..., None].to(dtype), organic_bid[..., None], onehot], -1
        )
        return _Batch(q, bid, worth, ad, cat, cat[:, :, None] == cat[:, None, :], features)

    def _bid_term(self, b: _Batch) -> torch.Tensor:
        logb = torch.log(b.bid + EPS)
        return torch.where(b.ad, self.alpha * logb + self.beta, logb)

    def _scores(self, h: torch.Tensor, state: torch.Tensor, k: int, placed: torch.Tensor) -> torch.Tensor:
        """Bid-free part of step ``k``'s scores: ``placed`` (B, n) same-category items on the page."""
        context = (state + self.slot.weight[k])[:, None, :].expand_as(h)
        g = self.scorer(torch.cat([h, context, placed[..., None]], -1)).squeeze(-1)
        return g + placed * self.log_keep

    def decode(
        self,
        b: _Batch,
        h: torch.Tensor,
        blocked: torch.Tensor | None = None,
        forced: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hard greedy decoding: slots (B, K) (-1 where nothing is left), the winning score per
        step (B, K) (-inf where nothing is left) and every candidate's score per step (B, K, n).
        ``blocked`` candidates are never placed; ``forced[:, k] >= 0`` places that one at step k."""
        bsz, n = b.q.shape
        taken = torch.zeros(bsz, n, dtype=torch.bool) if blocked is None else blocked.clone()
        static = torch.log(b.q) + self._bid_term(b)
        state = torch.zeros(bsz, h.shape[-1], dtype=h.dtype)
        placed = torch.zeros(bsz, n, dtype=h.dtype)
        rows = torch.arange(bsz)
        slots, tops, every = [], [], []
        for k in range(self.cfg.slots):
            s = static + self._scores(h, state, k, placed)
            top, pick = torch.where(taken, -torch.inf, s).max(-1)
            if forced is not None:
                pick = torch.where(forced[:, k] >= 0, forced[:, k], pick)
            valid = torch.isfinite(top) | (forced is not None and forced[:, k] >= 0)
            pick = torch.where(valid, pick, -1)
            safe = pick.clamp(min=0)
            state = state + torch.where(valid[:, None], h[rows, safe], 0.0) / self.cfg.slots
            placed = placed + (b.same[rows, safe] & valid[:, None]).to(h.dtype)
            taken = taken | (nn.functional.one_hot(safe, n).bool() & valid[:, None])
            slots.append(pick)
            tops.append(top)
            every.append(s)
        return torch.stack(slots, 1), torch.stack(tops, 1), torch.stack(every, 1)

    def _soft_pass(
        self, b: _Batch, h: torch.Tensor, tau: float, left: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The relaxed decoder: each step a softmax (temperature ``tau``) over the scores of
        what is ``left`` (B, n) in [0, 1]. Returns every candidate's score per step (B, K, n),
        the winning probabilities (B, K, n) and what is left before each step (B, K + 1, n)."""
        bsz, n = b.q.shape
        static = torch.log(b.q) + self._bid_term(b)
        state = torch.zeros(bsz, h.shape[-1], dtype=h.dtype)
        placed = torch.zeros(bsz, n, dtype=h.dtype)
        same = b.same.to(h.dtype)
        scores, probs, lefts = [], [], [left]
        for k in range(self.cfg.slots):
            s = static + self._scores(h, state, k, placed)
            p = torch.softmax((s + torch.log(left + EPS)) / tau, -1)
            scores.append(s)
            probs.append(p)
            state = state + (p[..., None] * h).sum(1) / self.cfg.slots
            placed = placed + torch.einsum("bi,bij->bj", p, same)
            left = left * (1 - p)
            lefts.append(left)
        return torch.stack(scores, 1), torch.stack(probs, 1), torch.stack(lefts, 1)

    def surrogate(
        self, b: _Batch, tau: float, welfare_weight: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Relaxed expected revenue + welfare_weight * objective per auction (to maximise).

        The revenue follows the mechanism: for every ad a relaxed i-removed pass gives its
        critical bid per step, thresholds ``T_k`` (their running minimum), the probability of
        slot ``<= k`` a logistic of ``alpha (log b - log T_k) / tau``, and at slot k the Myerson
        payment ``sum_{k' >= k} (x_k' - x_{k'+1}) T_k'``, its clicks ``x`` discounted by the
        relaxed page's neighbours. The objective takes the relaxed page as it is."""
        h = self.encoder(self.embed(b.features))
        bsz, n = b.q.shape
        ones = torch.ones(bsz, n, dtype=h.dtype)
        _, p, left = self._soft_pass(b, h, tau, ones)
        same = b.same.to(h.dtype)
        shown = 1 - left[:, -1]
        neighbours = torch.einsum("bi,bij->bj", shown, same) - shown
        factors = self.factors.to(h.dtype)
        ctr = b.q[:, None, :] * factors[None, :, None] * torch.exp(neighbours * self.log_keep)[:, None, :]
        objective = (p * ctr * b.worth[:, None, :]).sum((1, 2))
        ads = torch.nonzero(b.ad[0]).flatten()
        rep = lambda t: t.repeat_interleave(len(ads), 0)  # noqa: E731
        tiled = _Batch(*(rep(getattr(b, f)) for f in ("q", "bid", "worth", "ad", "cat", "same", "features")))
        rows = torch.arange(bsz * len(ads))
        who = ads.repeat(bsz)
        blocked = ones.repeat_interleave(len(ads), 0).clone()
        blocked[rows, who] = 0.0
        scores, _, rivals_left = self._soft_pass(tiled, rep(h), tau, blocked)
        top = tau * torch.logsumexp((scores + torch.log(rivals_left[:, :-1] + EPS)) / tau, -1)
        own = scores[rows, :, who] - self._bid_term(tiled)[rows, who][:, None]
        log_threshold = torch.cummin((top - own - self.beta) / self.alpha, 1).values
        log_bid = torch.log(tiled.bid[rows, who] + EPS)[:, None]
        upto = torch.sigmoid(self.alpha * (log_bid - log_threshold) / tau)
        at = upto - torch.cat([torch.zeros_like(upto[:, :1]), upto[:, :-1]], 1)
        x = (tiled.q[rows, who] * torch.exp(rep(neighbours)[rows, who] * self.log_keep))[:, None] * factors
        drop = x - torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], 1)
        pay = torch.flip(torch.cumsum(torch.flip(drop * torch.exp(log_threshold), [1]), 1), [1])
        revenue = (at * pay).sum(1).view(bsz, len(ads)).sum(1)
        total = revenue + welfare_weight * objective
        return total.mean(), {
            "revenue": float(revenue.detach().mean()),
            "objective": float(objective.detach().mean()),
        }


class LearnedAuction:
    """A trained EdgeNet as a mechanism: ``auction(a) -> Page`` with Myerson payments."""

    def __init__(self, net: EdgeNet) -> None:
        self.net = net.to(torch.float64).eval()
        self.cfg = net.cfg

    def __call__(self, a: Auctions) -> Page:
        parts = [self._page(a[start : start + CHUNK]) for start in range(0, len(a), CHUNK)]
        return Page(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("slots", "ctr", "pay")))

    @torch.no_grad()
    def _page(self, a: Auctions) -> Page:
        b = self.net.batch(a)
        h = self.net.encoder(self.net.embed(b.features))
        slots, _, _ = self.net.decode(b, h)
        page_slots = slots.numpy()
        ctr = page_ctr(a, page_slots, self.cfg)
        pay = np.zeros(ctr.shape)
        for i in np.flatnonzero(a.ad[0]):
            shown = page_slots == i
            if shown.any():
                pay[shown] = self._myerson(a, b, h, int(i), (ctr * shown).sum(1))[shown.any(1)]
        return Page(page_slots, ctr, pay)

    def _myerson(self, a: Auctions, b: _Batch, h: torch.Tensor, i: int, x_now: np.ndarray) -> np.ndarray:
        """Ad ``i``'s payment per auction: ``b x(b) - integral_0^b x``, its click curve from the
        critical bid of every step in the i-removed pass and the page it gets at each step."""
        bsz, n = b.q.shape
        k_slots = self.cfg.slots
        blocked = torch.zeros(bsz, n, dtype=torch.bool)
        blocked[:, i] = True
        rival, top, every = self.net.decode(b, h, blocked=blocked)
        own = every[:, :, i] - self.net._bid_term(b)[:, i : i + 1]
        critical = torch.exp((top - own - self.net.beta) / self.net.alpha).numpy()
        clicks = np.zeros((bsz, k_slots))
        for k in range(k_slots):
            forced = torch.full((bsz, k_slots), -1, dtype=torch.long)
            forced[:, :k] = rival[:, :k]
            forced[:, k] = i
            page, _, _ = self.net.decode(b, h, forced=forced)
            clicks[:, k] = page_ctr(a, page.numpy(), self.cfg)[:, k]
        threshold = np.minimum.accumulate(critical, axis=1)
        upper = np.concatenate([np.full((bsz, 1), np.inf), threshold[:, :-1]], 1)
        bid = a.bid[:, i : i + 1]
        integral = (clicks * np.clip(np.minimum(upper, bid) - threshold, 0.0, None)).sum(1)
        return bid[:, 0] * x_now - integral


def _draw(
    cfg: AuctionConfig, rng: np.random.Generator, n: int, pool: tuple[np.ndarray, np.ndarray] | None
) -> Auctions:
    sim = cfg.model_copy(update={"auctions": n})
    if pool is None:
        return simulate(sim, rng)
    rows = rng.integers(0, len(pool[0]), n)
    return simulate(sim, rng, pool[0][rows], pool[1][rows])


def _validate(net: EdgeNet, a: Auctions) -> dict[str, float]:
    """Exact revenue and objective of a copy of ``net`` as a mechanism on ``a``."""
    cfg = net.cfg
    o = outcome(a, LearnedAuction(copy.deepcopy(net))(a), cfg)
    return {"valid_revenue": o["revenue"], "valid_objective": o["objective"]}


def train(
    cfg: AuctionConfig, pool: tuple[np.ndarray, np.ndarray] | None = None, log: bool = False
) -> tuple[EdgeNet, list[dict[str, float]]]:
    """Fit an EdgeNet on freshly simulated auctions (seed ``cfg.seed``), their candidates drawn
    from ``pool`` (q, category) when given. Every ``eval_every`` steps the exact revenue +
    ``welfare_weight`` x objective is measured on separate validation auctions; the best
    network is returned, with the training curve."""
    lc: LearnedConfig = cfg.learned
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 7])
    valid = _draw(cfg, np.random.default_rng([cfg.seed, 8]), lc.validation, pool)
    net = EdgeNet(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=lc.lr)
    curve: list[dict[str, float]] = []
    best, best_state = -np.inf, copy.deepcopy(net.state_dict())
    for step in range(lc.steps + 1):
        if step % lc.eval_every == 0 or step == lc.steps:
            point = {
                "step": step,
                **_validate(net, valid),
                "alpha": float(net.alpha.detach()),
                "beta": float(net.beta.detach()),
            }
            score = point["valid_revenue"] + lc.welfare_weight * point["valid_objective"]
            if score > best:
                best, best_state = score, copy.deepcopy(net.state_dict())
            curve.append(point | {"best_so_far": best})
            if log:
                print({k: round(v, 4) for k, v in point.items()}, flush=True)
        if step == lc.steps:
            break
        value, parts = net.surrogate(
            net.batch(_draw(cfg, rng, lc.batch, pool)), lc.temperature, lc.welfare_weight
        )
        opt.zero_grad()
        (-value).backward()
        opt.step()
        if curve and curve[-1]["step"] == step:
            curve[-1] |= parts
    net.load_state_dict(best_state)
    return net, curve
