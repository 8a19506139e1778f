"""A mini-batch of encoded rows as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

PAD = 0


@dataclass
class Batch:
    """Tensors for B rows.

    sparse: LongTensor (B, n_categorical); sequences: one LongTensor (B, max_len) per sequence
    feature, unpooled, each row's items first and PAD (0) after; dense: FloatTensor
    (B, n_numeric); domain: LongTensor (B,), D = unseen; labels: FloatTensor (B, tasks) or None;
    weight: the batch's share of a training step's loss (1; a data-parallel rank's part of a
    global batch: ranks x its rows / the global batch's rows, 0 for a filler batch).
    """

    sparse: torch.Tensor
    sequences: tuple[torch.Tensor, ...]
    dense: torch.Tensor
    domain: torch.Tensor
    labels: torch.Tensor | None = None
    weight: float = 1.0

    def __len__(self) -> int:
        return self.domain.shape[0]

    def mask(self, i: int) -> torch.Tensor:
        """BoolTensor (B, max_len): which positions of sequence ``i`` hold an item."""
        return self.sequences[i] != PAD

    def lengths(self, i: int) -> torch.Tensor:
        """LongTensor (B,): the number of items in sequence ``i`` of each row."""
        return self.mask(i).sum(1)

    def index(self, rows: torch.Tensor | slice) -> Batch:
        """The rows selected by a slice, a boolean mask or an index tensor."""
        by_position = isinstance(rows, torch.Tensor) and rows.dtype != torch.bool

        def take(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, rows) if by_position else t[rows]

        return Batch(
            take(self.sparse),
            tuple(take(s) for s in self.sequences),
            take(self.dense),
            take(self.domain),
            None if self.labels is None else take(self.labels),
        )

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.sparse.to(device),
            tuple(s.to(device) for s in self.sequences),
            self.dense.to(device),
            self.domain.to(device),
            None if self.labels is None else self.labels.to(device),
            self.weight,
        )
