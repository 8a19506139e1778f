"""Encoded arrays held as tensors, cut into batches by slicing: no per-row Python work."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import torch

from mdctr.data.batch import Batch
from mdctr.data.encode import Encoded


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(array, requirements="CW"))


def as_batch(encoded: Encoded) -> Batch:
    """All rows of an encoded table as one Batch (sharing the arrays' memory)."""
    return Batch(
        _tensor(encoded.sparse),
        tuple(_tensor(s) for s in encoded.sequences),
        _tensor(encoded.dense),
        _tensor(encoded.domain),
        None if encoded.labels is None else _tensor(encoded.labels),
    )


def batch_order(
    n: int, batch_size: int, generator: torch.Generator | None, domain: torch.Tensor | None
) -> torch.Tensor | None:
    """The order rows are served in: as stored (None), a fresh random order for a generator,
    and with ``domain`` given, each batch's rows sorted by domain (what domain-routed layers
    would otherwise do per step)."""
    order = None if generator is None else torch.randperm(n, generator=generator)
    if domain is None:
        return order
    order = torch.arange(n) if order is None else order
    key = torch.arange(n).div_(batch_size, rounding_mode="floor") * (int(domain.max()) + 1) + domain[order]
    return order[torch.argsort(key, stable=True)]


def split_rows(n: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` parts of ``n`` rows, sizes differing by at most one."""
    base, extra = divmod(n, parts)
    bounds = [0]
    for part in range(parts):
        bounds.append(bounds[-1] + base + (part < extra))
    return list(itertools.pairwise(bounds))


def slices(
    rows: Batch,
    order: torch.Tensor | None,
    batch_size: int,
    start: int = 0,
    rank: int = 0,
    ranks: int = 1,
) -> Iterator[Batch]:
    """Consecutive batches of ``rows`` in ``order``, from batch number ``start`` on; with
    ``ranks`` > 1 only rank ``rank``'s contiguous part of each, weighted by its share (a part
    with no row is the batch's first row at weight 0, so every rank takes every step)."""
    for first in range(start * batch_size, len(rows), batch_size):  # gathered per batch: no shuffled copy
        n = min(batch_size, len(rows) - first)
        lo, hi = split_rows(n, ranks)[rank]
        weight = ranks * (hi - lo) / n
        if hi == lo:
            lo, hi = 0, 1
        picked = slice(first + lo, first + hi) if order is None else order[first + lo : first + hi]
        batch = rows.index(picked)
        batch.weight = weight
        yield batch


class TensorData:
    """All rows of an encoded table in memory; ``shard(rank, ranks)`` is one data-parallel
    rank's view: its part of every global batch, and its contiguous share of rows to score."""

    def __init__(self, encoded: Encoded, rank: int = 0, ranks: int = 1) -> None:
        self.encoded = encoded
        self.rows = as_batch(encoded)
        self.rank, self.ranks = rank, ranks

    def __len__(self) -> int:
        return len(self.rows)

    def shard(self, rank: int, ranks: int) -> TensorData:
        return TensorData(self.encoded, rank, ranks)

    def batches(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        by_domain: bool = False,
        start: int = 0,
    ) -> Iterator[Batch]:
        """Batches in order, or in a fresh random order when a generator is given, from batch
        number ``start`` on; ``by_domain`` sorts the rows inside each batch by domain."""
        domain = self.rows.domain if by_domain and len(self) else None
        order = batch_order(len(self), batch_size, generator, domain)
        yield from slices(self.rows, order, batch_size, start, self.rank, self.ranks)

    def chunks(self) -> Iterator[Encoded]:
        """The rows as encoded arrays, in order (here: one chunk; a shard's share of them)."""
        start, stop = split_rows(len(self), self.ranks)[self.rank]
        yield self.encoded if self.ranks == 1 else self.encoded.rows(start, stop)
