"""Ad / organic blending: VCG against brute force, GSP, incentive compatibility by search."""

import itertools

import numpy as np
import pytest

from mdctr.online import auction as A
from mdctr.online.config import AuctionConfig, parse


def config(**over: object) -> AuctionConfig:
    return parse(
        AuctionConfig, {"auctions": 300, "bidders": {"ads": 4, "organic": 3, "categories": 2}} | over
    )


def brute_force(
    a: A.Auctions, cfg: AuctionConfig, row: int, without: int | None = None
) -> tuple[float, tuple]:
    """The best total score over every ordered page of one auction, by enumeration."""
    one = a[np.array([row])]
    best, best_page = -np.inf, ()
    for page in itertools.permutations(range(a.q.shape[1]), cfg.slots):
        if without in page:
            continue
        ctr = A.page_ctr(one, np.array([page]), cfg)[0]
        total = float((ctr * one.bid[0, list(page)]).sum())
        if total > best:
            best, best_page = total, page
    return best, best_page


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_vcg_pages_and_payments_equal_brute_force(slots: int) -> None:
    cfg = config(slots=slots, auctions=40, externality=0.4)
    a = A.simulate(cfg, np.random.default_rng(slots))
    page = A.vcg(a, cfg)
    for row in range(len(a)):
        total, best_page = brute_force(a, cfg, row)
        ctr = page.ctr[row]
        assert np.isclose((ctr * a.bid[row, page.slots[row]]).sum(), total, rtol=1e-12)
        assert tuple(page.slots[row]) == best_page
        for k, i in enumerate(page.slots[row]):
            expected = 0.0
            if a.ad[row, i]:
                without, _ = brute_force(a, cfg, row, without=int(i))
                expected = without - (total - ctr[k] * a.bid[row, i])
            assert np.isclose(page.pay[row, k], expected, rtol=1e-10, atol=1e-15), (row, k)


def test_vcg_is_truthful_and_gsp_is_not() -> None:
    cfg = config()
    a = A.simulate(cfg, np.random.default_rng(0))
    vcg = A.ic_report(lambda x: A.vcg(x, cfg), a[:100], 31)
    gsp = A.ic_report(lambda x: A.gsp(x, cfg), a[:100], 31)
    assert vcg["ic_violation"] <= 1e-9
    assert gsp["ic_violation"] > 1e-3 and gsp["ic_mean"] > 0
    assert vcg["ic_searched"] == gsp["ic_searched"] == 100 * 4


@pytest.mark.parametrize("mechanism", [A.gsp, A.vcg])
def test_payments_are_individually_rational(mechanism: A.Mechanism) -> None:
    cfg = config()
    a = A.simulate(cfg, np.random.default_rng(1))
    page = mechanism(a, cfg)
    rows = np.arange(len(a))[:, None]
    if mechanism is A.gsp:
        assert (page.pay >= 0).all()
    assert (page.pay <= page.ctr * a.bid[rows, page.slots] + 1e-12).all()
    assert (page.pay[~a.ad[rows, page.slots]] == 0).all()
    assert (A.utilities(a, page) >= -1e-12).all()


def test_gsp_ranks_by_bid_times_ctr_and_charges_the_next_rank() -> None:
    cfg = config(slots=2, externality=0.0)
    a = A.simulate(cfg, np.random.default_rng(2))
    page = A.gsp(a, cfg)
    rank = a.bid * a.q
    order = np.argsort(-rank, -1)
    assert np.array_equal(page.slots, order[:, :2])
    rows = np.arange(len(a))
    first = order[:, 0]
    expected = page.ctr[:, 0] * rank[rows, order[:, 1]] / a.q[rows, first]
    assert np.allclose(page.pay[:, 0], np.where(a.ad[rows, first], expected, 0.0))


def test_vcg_rebates_when_a_full_page_must_take_a_worse_neighbour() -> None:
    # two slots: without ad 0 the page must hold ad 1 beside the organic item of its category,
    # so the others' best total is below what they make beside ad 0 -> ad 0 is paid
    cfg = parse(
        AuctionConfig, {"slots": 2, "externality": 0.5, "bidders": {"ads": 2, "organic": 1, "categories": 2}}
    )
    a = A.Auctions(
        q=np.array([[0.1, 0.1, 0.1]]),
        value=np.array([[3.0, 1.0, 0.1]]),
        bid=np.array([[3.0, 1.0, 0.1]]),
        ad=np.array([[True, True, False]]),
        category=np.array([[0, 1, 1]]),
    )
    page = A.vcg(a, cfg)
    assert list(page.slots[0]) == [0, 1]
    # beside ad 0, ad 1 makes 0.1 * 0.7 * 1 = 0.07; without ad 0 the best page is ad 1 then the
    # organic item, both discounted: 0.1 * 0.5 * 1 + 0.1 * 0.7 * 0.5 * 0.1 = 0.0535
    assert np.isclose(page.pay[0, 0], 0.0535 - 0.07)
    assert np.isclose(page.pay[0, 1], 0.1 * 0.7 * 0.1)  # ad 1 is replaced by the organic item
    assert A.outcome(a, page, cfg)["rebates"] == 1.0
    assert (A.utilities(a, page) >= 0).all()


def test_without_externalities_vcg_charges_less_than_gsp() -> None:
    # the textbook order: with separable CTRs and truthful bids, VCG revenue <= GSP revenue
    cfg = config(externality=0.0)
    a = A.simulate(cfg, np.random.default_rng(3))
    vcg, gsp = A.vcg(a, cfg), A.gsp(a, cfg)
    assert np.array_equal(vcg.slots, A.gsp(a, cfg).slots)
    assert (vcg.pay.sum(1) <= gsp.pay.sum(1) + 1e-12).all()


def test_chunked_equals_one_pass_and_the_simulator_is_seeded() -> None:
    cfg = config(auctions=A.CHUNK + 100)
    a = A.simulate(cfg, np.random.default_rng(4))
    one, chunks = A.vcg(a, cfg), A.chunked(A.vcg, a, cfg)
    assert np.array_equal(one.slots, chunks.slots) and np.allclose(one.pay, chunks.pay)
    b = A.simulate(cfg, np.random.default_rng(4))
    assert np.array_equal(a.bid, b.bid) and np.array_equal(a.category, b.category)
    assert not np.array_equal(a.bid, A.simulate(cfg, np.random.default_rng(5)).bid)


def test_virtual_bids_trade_ads_for_organic_items() -> None:
    a_cfg, b_cfg = config(virtual_bid=0.2), config(virtual_bid=5.0)
    low = A.outcome(
        A.simulate(a_cfg, np.random.default_rng(6)),
        A.vcg(A.simulate(a_cfg, np.random.default_rng(6)), a_cfg),
        a_cfg,
    )
    high = A.outcome(
        A.simulate(b_cfg, np.random.default_rng(6)),
        A.vcg(A.simulate(b_cfg, np.random.default_rng(6)), b_cfg),
        b_cfg,
    )
    assert high["ad_slots"] < low["ad_slots"] - 0.2
    assert high["revenue"] < low["revenue"]
