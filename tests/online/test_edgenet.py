"""The learned EdgeNet auction: truthful by construction, Myerson payments, and training that
raises revenue."""

import numpy as np
import pytest
import torch

from mdctr.online import auction as A
from mdctr.online import edgenet as E
from mdctr.online.config import AuctionConfig, parse


def config(**over: object) -> AuctionConfig:
    tree = {
        "auctions": 400,
        "bidders": {"ads": 4, "organic": 3, "categories": 3},
        "learned": {"dim": 16, "heads": 2},
    }
    return parse(AuctionConfig, tree | over)


def random_net(cfg: AuctionConfig, seed: int = 0) -> E.EdgeNet:
    torch.manual_seed(seed)
    net = E.EdgeNet(cfg)
    torch.nn.init.normal_(net.scorer[-1].weight, std=0.5)
    with torch.no_grad():
        net.raw_alpha.fill_(0.8)
        net.beta.fill_(-0.3)
    return net


def test_untrained_without_externalities_is_vcg() -> None:
    # g = 0, alpha = 1, beta = 0: rank by bid * q, the efficient page when CTRs are separable,
    # and Myerson's payments with nothing paid at bid zero are then VCG's
    cfg = config(externality=0.0)
    a = A.simulate(cfg, np.random.default_rng(0))
    learned, vcg = E.LearnedAuction(E.EdgeNet(cfg))(a), A.vcg(a, cfg)
    assert np.array_equal(learned.slots, vcg.slots)
    assert np.allclose(learned.pay, vcg.pay, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(("externality", "largest"), [(0.0, 1e-9), (0.4, 0.02)])
def test_a_random_net_is_truthful(externality: float, largest: float) -> None:
    # exactly without externalities; with them, only where a better slot sits beside more items
    # of the ad's category (fewer clicks) can a lower bid pay, and a random net leaves a little
    cfg = config(externality=externality)
    a = A.simulate(cfg, np.random.default_rng(1))
    mechanism = E.LearnedAuction(random_net(cfg))
    report = A.ic_report(mechanism, a[:60], 31)
    assert report["ic_violation_rel"] <= largest, report
    page = mechanism(a)
    rows = np.arange(len(a))[:, None]
    assert (A.utilities(a, page) >= -1e-12).all()
    assert (page.pay[~a.ad[rows, page.slots]] == 0).all()
    assert len({tuple(s) for s in page.slots}) > 50  # the net is not a constant ranking


def test_slot_improves_with_the_bid_and_no_other_score_moves() -> None:
    cfg = config()
    net = random_net(cfg, seed=3)
    a = A.simulate(cfg, np.random.default_rng(2))[:50]
    mechanism = E.LearnedAuction(net)
    rank = []
    for scale in (0.25, 0.5, 1.0, 2.0, 4.0):
        bid = a.bid.copy()
        bid[:, 0] *= scale
        slots = mechanism(A.Auctions(a.q, a.value, bid, a.ad, a.category)).slots
        rank.append(np.where((slots == 0).any(1), (slots == 0).argmax(1), cfg.slots))
    assert (np.diff(np.stack(rank), axis=0) <= 0).all()
    b = net.batch(a)
    h = net.encoder(net.embed(b.features))
    bid = b.bid.clone()
    bid[:, 0] *= 3
    b2 = E._Batch(b.q, bid, b.worth, b.ad, b.cat, b.same, net.batch(a).features)
    blocked = torch.zeros_like(b.ad)
    blocked[:, 0] = True
    _, top1, every1 = net.decode(b, h, blocked=blocked)
    _, top2, every2 = net.decode(b2, h, blocked=blocked)
    assert torch.equal(every1[:, :, 1:], every2[:, :, 1:]) and torch.equal(top1, top2)


def test_training_raises_revenue_and_stays_truthful() -> None:
    learned = {"dim": 16, "heads": 2, "steps": 100, "batch": 256, "temperature": 0.05, "validation": 500}
    cfg = config(learned=learned)
    a = A.simulate(cfg, np.random.default_rng(9))
    before = A.outcome(a, E.LearnedAuction(E.EdgeNet(cfg))(a), cfg)["revenue"]
    net, curve = E.train(cfg)
    mechanism = E.LearnedAuction(net)
    after = A.outcome(a, mechanism(a), cfg)["revenue"]
    assert after > 1.15 * before, (before, after)
    # the returned network is the best validated checkpoint, and training found a better one
    assert curve[-1]["best_so_far"] == max(p["valid_revenue"] for p in curve) > curve[0]["valid_revenue"]
    assert A.ic_report(mechanism, a[:40], 21)["ic_violation"] <= 1e-9


def test_same_seed_same_net() -> None:
    cfg = config(learned={"dim": 16, "heads": 2, "steps": 3, "batch": 64})
    (n1, c1), (n2, c2) = E.train(cfg), E.train(cfg)
    assert c1 == c2
    assert all(torch.equal(p, q) for p, q in zip(n1.parameters(), n2.parameters(), strict=True))
