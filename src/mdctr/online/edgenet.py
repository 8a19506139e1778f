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

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mdctr.online.auction import CHUNK, Auctions, Page, page_ctr, simulate
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

    def surrogate(
        self, b: _Batch, tau: float, welfare_weight: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Relaxed expected revenue + welfare_weight * objective per auction (to maximise)."""
        h = self.encoder(self.embed(b.features))
        bsz, n = b.q.shape
        static = torch.log(b.q) + self._bid_term(b)
        state = torch.zeros(bsz, h.shape[-1], dtype=h.dtype)
        placed = torch.zeros(bsz, n, dtype=h.dtype)
        left = torch.ones(bsz, n, dtype=h.dtype)
        same = b.same.to(h.dtype)
        probs, prices = [], []
        for k in range(self.cfg.slots):
            s = static + self._scores(h, state, k, placed)
            avail = s + torch.log(left + EPS)
            p = torch.softmax(avail / tau, -1)
            others = torch.where(torch.eye(n, dtype=torch.bool), -torch.inf, avail[:, None, :]).amax(-1)
            prices.append(torch.minimum(b.bid * torch.exp((others - s) / self.alpha), b.bid))
            probs.append(p)
            state = state + (p[..., None] * h).sum(1) / self.cfg.slots
            placed = placed + torch.einsum("bi,bij->bj", p, same)
            left = left * (1 - p)
        p, price = torch.stack(probs, 1), torch.stack(prices, 1)
        shown = 1 - left
        others_same = torch.einsum("bi,bij->bj", shown, same) - shown
        ctr = (
            b.q[:, None, :]
            * self.factors.to(h.dtype)[None, :, None]
            * torch.exp(others_same * self.log_keep)[:, None, :]
        )
        step_value = ctr * price
        ladder = step_value - torch.cat([ctr[:, 1:] * price[:, :-1], torch.zeros_like(ctr[:, :1])], 1)
        pay = torch.flip(torch.cumsum(torch.flip(ladder, [1]), 1), [1])
        revenue = (p * pay * b.ad[:, None, :]).sum((1, 2))
        objective = (p * ctr * b.worth[:, None, :]).sum((1, 2))
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


def train(
    cfg: AuctionConfig, pool: tuple[np.ndarray, np.ndarray] | None = None, log: bool = False
) -> tuple[EdgeNet, list[dict[str, float]]]:
    """Fit an EdgeNet on freshly simulated auctions (seed ``cfg.seed``), their candidates drawn
    from ``pool`` (q, category) when given; returns it and its training curve."""
    lc: LearnedConfig = cfg.learned
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 7])
    net = EdgeNet(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=lc.lr)
    sim = cfg.model_copy(update={"auctions": lc.batch})
    curve = []
    for step in range(lc.steps):
        rows = None if pool is None else rng.integers(0, len(pool[0]), lc.batch)
        auctions = simulate(sim, rng) if rows is None else simulate(sim, rng, pool[0][rows], pool[1][rows])
        value, parts = net.surrogate(net.batch(auctions), lc.temperature, lc.welfare_weight)
        opt.zero_grad()
        (-value).backward()
        opt.step()
        if step % 50 == 0 or step == lc.steps - 1:
            curve.append(
                {"step": step, **parts, "alpha": float(net.alpha.detach()), "beta": float(net.beta.detach())}
            )
            if log:
                print(curve[-1])
    return net, curve
