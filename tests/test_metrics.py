import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from mdctr.metrics import auc, evaluate, gauc, logloss


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 3000
    label = (rng.random(n) < 0.3).astype(np.float64)
    prob = np.clip(0.3 + 0.3 * (label - 0.3) + rng.normal(0, 0.2, n), 0.01, 0.99)
    prob = np.round(prob, 2)  # ties, which GAUC must handle like sklearn
    domain = rng.integers(0, 3, n)
    user = rng.integers(0, 80, n)
    return label, prob, domain, user


def test_auc_and_logloss_equal_sklearn(scored) -> None:
    label, prob, _, _ = scored
    assert auc(label, prob) == pytest.approx(roc_auc_score(label, prob), abs=1e-12)
    assert logloss(label, prob) == pytest.approx(log_loss(label, prob), abs=1e-12)
    assert math.isnan(auc(np.ones(5), np.linspace(0, 1, 5)))


def test_gauc_equals_a_loop_over_users(scored) -> None:
    label, prob, _, user = scored
    total, weight = 0.0, 0
    for u in np.unique(user):
        m = user == u
        if 0 < label[m].sum() < m.sum():
            total += roc_auc_score(label[m], prob[m]) * m.sum()
            weight += m.sum()
    assert gauc(label, prob, user) == pytest.approx(total / weight, abs=1e-12)


def test_gauc_hand_computed() -> None:
    label = np.array([1, 0, 0, 1, 0, 1, 1])
    prob = np.array([0.9, 0.2, 0.95, 0.5, 0.5, 0.1, 0.3])
    user = np.array([1, 1, 1, 2, 2, 3, 3])
    # user 1: pos 0.9 beats 0.2, loses to 0.95 -> 0.5 (3 rows); user 2: tie -> 0.5 (2 rows); user 3 skipped
    assert gauc(label, prob, user) == pytest.approx((0.5 * 3 + 0.5 * 2) / 5)


def test_evaluate_follows_the_metrics_contract(scored) -> None:
    label, prob, domain, user = scored
    domain = domain.copy()
    domain[:10] = 3  # unseen domain
    out = evaluate(label, prob, domain, ["a", "b", "c"], user)
    assert set(out) == {"overall", "domains", "mean_auc", "wauc", "gauc"}
    assert set(out["overall"]) == {"auc", "logloss", "n"}
    assert list(out["domains"]) == ["a", "b", "c", "<unseen>"]
    assert out["domains"]["<unseen>"]["unseen"] is True
    per = {k: roc_auc_score(label[domain == i], prob[domain == i]) for i, k in enumerate("abc")}
    n = {k: int((domain == i).sum()) for i, k in enumerate("abc")}
    for k in "abc":
        d = out["domains"][k]
        assert set(d) == {"auc", "logloss", "n", "pos_rate"}
        assert d["auc"] == pytest.approx(per[k], abs=1e-6)
        assert d["n"] == n[k]
        assert d["pos_rate"] == pytest.approx(label[domain == "abc".index(k)].mean(), abs=1e-6)
    assert out["mean_auc"] == pytest.approx(np.mean(list(per.values())), abs=1e-6)
    assert out["wauc"] == pytest.approx(sum(per[k] * n[k] for k in "abc") / sum(n.values()), abs=1e-6)
    assert out["overall"]["n"] == len(label)
    assert out["gauc"] == pytest.approx(gauc(label, prob, user), abs=1e-6)
