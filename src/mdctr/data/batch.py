"""A mini-batch of encoded rows as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """Tensors for B rows.

    sparse: LongTensor (B, n_categorical); sequences: LongTensors (B, max_len), PAD = 0;
    dense: FloatTensor (B, n_numeric); domain: LongTensor (B,), D = unseen;
    label: FloatTensor (B,) or None.
    """

    sparse: torch.Tensor
    sequences: tuple[torch.Tensor, ...]
    dense: torch.Tensor
    domain: torch.Tensor
    label: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.domain.shape[0]

    def index(self, rows: torch.Tensor | slice) -> Batch:
        """The rows selected by a slice, a boolean mask or an index tensor."""
        by_position = isinstance(rows, torch.Tensor) and rows.dtype != torch.bool

        def take(t: torch.Tensor) -> torch.Tensor:
            # index_select: half the cost of t[rows] per training batch (54 vs 112 us for 5 tensors)
            return t.index_select(0, rows) if by_position else t[rows]

        return Batch(
            take(self.sparse),
            tuple(take(s) for s in self.sequences),
            take(self.dense),
            take(self.domain),
            None if self.label is None else take(self.label),
        )

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.sparse.to(device),
            tuple(s.to(device) for s in self.sequences),
            self.dense.to(device),
            self.domain.to(device),
            None if self.label is None else self.label.to(device),
        )
