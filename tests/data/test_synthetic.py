import numpy as np
import polars as pl

from mdctr.data.synthetic import SyntheticSpec, domain_shares, generate
from mdctr.metrics import auc


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    spec = SyntheticSpec(rows=2000, domains=4, seed=3)
    assert generate(spec).equals(generate(spec))
    assert not generate(spec).equals(generate(SyntheticSpec(rows=2000, domains=4, seed=4)))


def test_domains_are_unequal_and_probabilities_known() -> None:
    frame = generate(SyntheticSpec(rows=60_000, domains=5, seed=1))
    sizes = frame.group_by("domain").len().sort("domain")["len"].to_numpy()
    np.testing.assert_allclose(sizes / sizes.sum(), domain_shares(5), atol=0.01)
    assert sizes.max() > 4 * sizes.min()
    p = frame["p"].to_numpy()
    assert ((p > 0) & (p < 1)).all()
    assert abs(frame["label"].mean() - p.mean()) < 0.01
    assert 0.75 < auc(frame["label"].to_numpy(), p) < 0.95


def test_domains_differ_in_how_price_acts() -> None:
    frame = generate(SyntheticSpec(rows=60_000, domains=4, seed=1)).with_columns(
        logit=(pl.col("p") / (1 - pl.col("p"))).log(), lp=pl.col("price").log()
    )
    corr = {
        d: frame.filter(pl.col("domain") == d).select(pl.corr("lp", "logit")).item() for d in ("d0", "d3")
    }
    assert corr["d0"] < -0.05 < 0.05 < corr["d3"]
