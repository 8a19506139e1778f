"""Encoded arrays held as tensors, cut into batches by slicing: no per-row Python work."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from mdctr.data.batch import Batch
from mdctr.data.encode import Encoded


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(array, requirements="CW"))


class TensorData:
    """All rows of an encoded table as one contiguous Batch."""

    def __init__(self, encoded: Encoded) -> None:
        self.rows = Batch(
            _tensor(encoded.sparse),
            tuple(_tensor(s) for s in encoded.sequences),
            _tensor(encoded.dense),
            _tensor(encoded.domain),
            None if encoded.label is None else _tensor(encoded.label),
        )

    def __len__(self) -> int:
        return len(self.rows)

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, by_domain: bool = False
    ) -> Iterator[Batch]:
        """Yield batches in order, or in a fresh random order when a generator is given;
        ``by_domain`` sorts the rows inside each batch by domain (what domain-routed layers
        would otherwise do per step)."""
        n = len(self)
        order = None if generator is None else torch.randperm(n, generator=generator)
        if by_domain:
            order = torch.arange(n) if order is None else order
            domain = self.rows.domain[order]
            key = torch.arange(n).div_(batch_size, rounding_mode="floor") * (int(domain.max()) + 1) + domain
            order = order[torch.argsort(key, stable=True)]
        for start in range(0, n, batch_size):  # gathered per batch: no shuffled copy of the data
            rows = slice(start, start + batch_size) if order is None else order[start : start + batch_size]
            yield self.rows.index(rows)
