"""Encoded arrays held as tensors, cut into batches by slicing: no per-row Python work."""

from __future__ import annotations

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


def slices(rows: Batch, order: torch.Tensor | None, batch_size: int, start: int = 0) -> Iterator[Batch]:
    """Consecutive batches of ``rows`` in ``order``, from batch number ``start`` on."""
    for first in range(start * batch_size, len(rows), batch_size):  # gathered per batch: no shuffled copy
        picked = slice(first, first + batch_size) if order is None else order[first : first + batch_size]
        yield rows.index(picked)


class TensorData:
    """All rows of an encoded table in memory."""

    def __init__(self, encoded: Encoded) -> None:
        self.encoded = encoded
        self.rows = as_batch(encoded)

    def __len__(self) -> int:
        return len(self.rows)

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
        yield from slices(self.rows, batch_order(len(self), batch_size, generator, domain), batch_size, start)

    def chunks(self) -> Iterator[Encoded]:
        """The rows as encoded arrays, in order (here: one chunk)."""
        yield self.encoded
