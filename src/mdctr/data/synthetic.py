"""A seeded multi-domain click log with known click probabilities.

Domains share most of the structure (per-value biases and a set of pairwise interactions
between latent vectors) and differ in some of it: each domain re-weights the shared
interactions by its own vector and adds one interaction of its own, and the slope of the
numeric feature changes sign across domains. The true probability ``p`` is kept, so the
oracle AUC (scoring with ``p``) is the ceiling any model can reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mdctr.data.cache import atomic_write
from mdctr.data.schema import Feature, Schema

CATEGORICAL = ("user", "item", "category", "brand", "city", "device")
CARDINALITY = (5000, 2000, 50, 300, 100, 8)
NOISE = ("noise_a", "noise_b")
NOISE_CARDINALITY = (1000, 10)
SHARED_PAIRS = ((0, 1), (0, 2), (1, 4), (3, 5))
DOMAIN_PAIRS = ((0, 3), (1, 5), (2, 4), (0, 4), (1, 2), (3, 4), (2, 5), (0, 5))


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and shape of a synthetic log."""

    rows: int = 1_000_000
    domains: int = 6
    rank: int = 4
    seed: int = 2024
    base_rate: float = -1.6
    domain_strength: float = 1.0


def domain_shares(domains: int) -> np.ndarray:
    """Unequal domain sizes: geometric shares, the largest domain about 6x the smallest at 6."""
    shares = 0.7 ** np.arange(domains)
    return shares / shares.sum()


SCHEMA = Schema(
    features=(
        *(Feature(name=c) for c in (*CATEGORICAL, *NOISE)),
        Feature(name="price", kind="numeric", log1p=True),
        Feature(name="tags", kind="sequence", max_len=3),
    ),
    domain=("domain",),
    labels=("label",),
    user="user",
    oracle="p",
)
"""The columns of a synthetic log; ``p`` is the oracle."""


def generate(spec: SyntheticSpec = SyntheticSpec()) -> pl.DataFrame:
    """Rows with columns domain, the categorical features, noise features, ``price`` (numeric),
    ``tags`` (list), ``p`` (true click probability) and ``label`` (sampled from ``p``)."""
    rng = np.random.default_rng(spec.seed)
    return _sample(spec, spec.rows, rng, rng)


def generate_shard(spec: SyntheticSpec, shard: int, rows: int) -> pl.DataFrame:
    """Shard ``shard`` (``rows`` rows) of a log of any size: every shard of one ``spec.seed``
    shares the log's parameters (latent vectors, biases, domain effects; drawn from the seed
    alone, so they differ from ``generate``'s), and draws its rows from its own seed."""
    world = np.random.default_rng(spec.seed)
    return _sample(spec, rows, world, np.random.default_rng([spec.seed, shard + 1]))


def _sample(
    spec: SyntheticSpec, n: int, world: np.random.Generator, rng: np.random.Generator
) -> pl.DataFrame:
    """Draw ``n`` rows: the log's parameters from ``world``, the rows from ``rng`` (one generator
    for both is the single-table order of ``generate``)."""
    r, d_count = spec.rank, spec.domains
    domain = rng.choice(d_count, size=n, p=domain_shares(d_count))
    ids = [
        np.minimum(rng.zipf(1.3, size=n) - 1, card - 1) if k == 0 else rng.integers(0, card, size=n)
        for k, card in enumerate(CARDINALITY)
    ]
    latent = [world.normal(0, 1 / np.sqrt(r), size=(card, r)) for card in CARDINALITY]
    bias = [world.normal(0, 0.3, size=card) for card in CARDINALITY]
    z = [latent[k][ids[k]] for k in range(len(CARDINALITY))]

    logit = spec.base_rate + world.normal(0, 0.3, size=d_count)[domain]
    logit = logit + sum(bias[k][ids[k]] for k in range(len(CARDINALITY)))
    reweight = 1 + spec.domain_strength * world.normal(0, 0.7, size=(d_count, r))
    for i, j in SHARED_PAIRS:
        logit = logit + (z[i] * z[j] * reweight[domain]).sum(1)
    own_pair = np.array([DOMAIN_PAIRS[d % len(DOMAIN_PAIRS)] for d in range(d_count)])
    own_i, own_j = own_pair[domain, 0], own_pair[domain, 1]
    z_stack = np.stack(z)
    rows = np.arange(n)
    logit = logit + 2.0 * spec.domain_strength * (z_stack[own_i, rows] * z_stack[own_j, rows]).sum(1)

    price = rng.lognormal(3, 1, size=n)
    slope = spec.domain_strength * np.linspace(-0.6, 0.6, d_count)
    logit = logit + slope[domain] * (np.log(price) - 3)

    tag_count = rng.integers(0, 4, size=n)
    tag_bias = world.normal(0, 0.4, size=30)
    tag_ids = rng.integers(0, 30, size=(n, 3))
    tag_mask = np.arange(3)[None, :] < tag_count[:, None]
    logit = logit + (tag_bias[tag_ids] * tag_mask).sum(1) / np.maximum(tag_count, 1)
    tags = pl.Series("tags", tag_ids.astype(str).ravel()).reshape((n, 3)).arr.to_list()

    p = 1 / (1 + np.exp(-logit))
    label = (rng.random(n) < p).astype(np.int8)
    columns: dict[str, object] = {"domain": np.char.add("d", domain.astype(str))}
    for name, values in zip(CATEGORICAL, ids, strict=True):
        columns[name] = values
    for name, card in zip(NOISE, NOISE_CARDINALITY, strict=True):
        columns[name] = rng.integers(0, card, size=n)
    frame = pl.DataFrame(columns).with_columns(
        pl.Series("price", price),
        pl.DataFrame({"tags": tags, "n": tag_count}).select(pl.col("tags").list.head(pl.col("n")))["tags"],
        pl.Series("p", p),
        pl.Series("label", label),
    )
    return frame


SPLIT_SHARDS = {"train": 0, "valid": 1_000_000, "test": 2_000_000}
"""The first shard number of each split, so that no two splits draw the same rows."""


def write_split(
    spec: SyntheticSpec, folder: Path, split: str, rows: int, shard_rows: int, row_group: int
) -> list[Path]:
    """``rows`` rows of ``split`` as parquet shards ``folder/split/part-NNNNN.parquet`` of at most
    ``shard_rows`` rows (row groups of ``row_group``), each written atomically; one shard in
    memory at a time."""
    paths = []
    for k, first in enumerate(range(0, rows, shard_rows)):
        shard = generate_shard(spec, SPLIT_SHARDS[split] + k, min(shard_rows, rows - first))
        path = folder / split / f"part-{k:05d}.parquet"
        atomic_write(path, lambda tmp, shard=shard: shard.write_parquet(tmp, row_group_size=row_group))
        paths.append(path)
    return paths
