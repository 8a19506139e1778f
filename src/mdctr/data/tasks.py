"""The benchmark tasks of BENCHMARKS.md: which data, and the schema of its columns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from mdctr.data import movielens, synthetic
from mdctr.data.schema import Feature, Schema


@dataclass(frozen=True)
class Task:
    """A benchmark task: a loader of the full table (given a row count, for generators) and the
    schema of its columns."""

    load: Callable[[int | None], pl.DataFrame]
    schema: Schema


MOVIELENS_FEATURES = (
    *(Feature(name=c) for c in ("user_id", "item_id", "gender", "age", "occupation", "zip_code")),
    Feature(name="genres", kind="sequence", max_len=6),
)


def _movielens(dataset: str) -> Callable[[int | None], pl.DataFrame]:
    def load(_rows: int | None) -> pl.DataFrame:
        table = movielens.load(dataset)
        return table.with_columns((pl.col("rating") == 5).cast(pl.Int8).alias("label"))

    return load


def _synthetic(rows: int | None) -> pl.DataFrame:
    spec = synthetic.SyntheticSpec() if rows is None else synthetic.SyntheticSpec(rows=rows)
    return synthetic.generate(spec)


def _movielens_schema(domain: str) -> Schema:
    return Schema(features=MOVIELENS_FEATURES, domain=(domain,), labels=("label",), user="user_id")


TASKS: dict[str, Task] = {
    "ml100k-gender": Task(_movielens("movielens-100k"), _movielens_schema("gender")),
    "ml1m-gender": Task(_movielens("movielens-1m"), _movielens_schema("gender")),
    "ml1m-age": Task(_movielens("movielens-1m"), _movielens_schema("age")),
    "synthetic": Task(_synthetic, synthetic.SCHEMA),
}
