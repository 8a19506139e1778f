"""Real candidate sets for the auctions: a trained mdctr run scores one user against the items of
other rows of a table (e.g. a MovieLens user x n movies), and its pCTR is each candidate's CTR."""

from __future__ import annotations

import numpy as np
import polars as pl

from mdctr.errors import InputError
from mdctr.online.config import AuctionConfig, CandidatesConfig


def read_candidates(spec: CandidatesConfig) -> pl.DataFrame:
    """The candidate table: a task's full table or a parquet/CSV file."""
    from mdctr.data.table import read_table
    from mdctr.data.tasks import TASKS

    task = TASKS.get(spec.table)
    frame = task.load(None) if task is not None else read_table(spec.table)
    missing = [c for c in spec.items if c not in frame.columns]
    if missing:
        raise InputError(f"candidates.items: {missing} not columns of {spec.table}; it has {frame.columns}")
    return frame


def category_ids(column: pl.Series, categories: int) -> np.ndarray:
    """Category per row: a list's first element, the ``categories - 1`` most frequent values
    their own id and every other value the last id."""
    if isinstance(column.dtype, pl.List):
        column = column.list.first()
    text = column.cast(pl.String).fill_null("")
    top = text.value_counts(sort=True).get_column(text.name).head(categories - 1).to_list()
    lookup = {value: k for k, value in enumerate(top)}
    return np.array([lookup.get(v, categories - 1) for v in text.to_list()], dtype=np.int64)


def score_candidates(
    run_dir: str, frame: pl.DataFrame, cfg: AuctionConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(q, category)``, both (auctions, candidates): for each auction one row's user columns
    with ``candidates`` other rows' item columns, scored by the run."""
    from mdctr.predictor import Predictor

    spec = cfg.candidates
    assert spec is not None
    b, n = cfg.auctions, cfg.bidders.ads + cfg.bidders.organic
    users = rng.integers(0, len(frame), b)
    items = rng.integers(0, len(frame), (b, n))
    user_columns = [c for c in frame.columns if c not in spec.items]
    rows = pl.concat(
        [
            frame[np.repeat(users, n)].select(user_columns),
            frame[items.ravel()].select(spec.items),
        ],
        how="horizontal",
    )
    q = Predictor(run_dir, backend="torch").predict_frame(rows).astype(np.float64).reshape(b, n)
    category = category_ids(frame.get_column(spec.category), cfg.bidders.categories)[items]
    return q, category
