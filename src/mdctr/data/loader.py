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

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Yield batches in order, or in a fresh random order when a generator is given."""
        rows = (
            self.rows
            if generator is None
            else self.rows.index(torch.randperm(len(self), generator=generator))
        )
        for start in range(0, len(self), batch_size):
            yield rows.index(slice(start, start + batch_size))
