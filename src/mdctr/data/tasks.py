"""The benchmark tasks of BENCHMARKS.md: which data, label, domain and features."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from mdctr.config import FeatureConfig
from mdctr.data import movielens, synthetic


@dataclass(frozen=True)
class Task:
    """A benchmark task: a loader of the full table plus its column roles."""

    load: Callable[[int | None], pl.DataFrame]
    label: str
    domain: str
    features: tuple[FeatureConfig, ...]
    user: str | None
    extra: tuple[str, ...] = ()


MOVIELENS_FEATURES = (
    *(FeatureConfig(name=c) for c in ("user_id", "item_id", "gender", "age", "occupation", "zip_code")),
    FeatureConfig(name="genres", kind="sequence", max_len=6),
)


def _movielens(dataset: str) -> Callable[[int | None], pl.DataFrame]:
    def load(_rows: int | None) -> pl.DataFrame:
        table = movielens.load(dataset)
        return table.with_columns((pl.col("rating") == 5).cast(pl.Int8).alias("label"))

    return load


def _synthetic(rows: int | None) -> pl.DataFrame:
    spec = synthetic.SyntheticSpec() if rows is None else synthetic.SyntheticSpec(rows=rows)
    return synthetic.generate(spec)


SYNTHETIC_FEATURES = (
    *(FeatureConfig(name=c) for c in (*synthetic.CATEGORICAL, *synthetic.NOISE)),
    FeatureConfig(name="price", kind="numeric", log1p=True),
    FeatureConfig(name="tags", kind="sequence", max_len=3),
)

TASKS: dict[str, Task] = {
    "ml100k-gender": Task(_movielens("movielens-100k"), "label", "gender", MOVIELENS_FEATURES, "user_id"),
    "ml1m-gender": Task(_movielens("movielens-1m"), "label", "gender", MOVIELENS_FEATURES, "user_id"),
    "ml1m-age": Task(_movielens("movielens-1m"), "label", "age", MOVIELENS_FEATURES, "user_id"),
    "synthetic": Task(_synthetic, "label", "domain", SYNTHETIC_FEATURES, "user", extra=("p",)),
}
