"""What every deep backbone shares: embedding -> network -> logit, plus wide logit terms.

Splitting a backbone this way lets the multi-domain family (shared-bottom, MMoE, PLE, DADNN)
use any backbone's network as its shared bottom or as its experts, over one shared embedding,
without a copy of the backbone's code.
"""

from __future__ import annotations

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.nn.embedding import FieldEmbedding


class Backbone(nn.Module):
    """``logit = head(represent(fields)) + wide(fields)`` with ``fields = embedding(batch)``.

    Built from its ``embedding`` (or None: a bottom or expert of a multi-domain model, which
    embeds once and makes the logits itself; such a backbone has no head either), the number of
    ``fields`` and their size ``dim``, and ``tasks`` (logits per row). Subclasses build their
    network, call ``_output`` (sets ``out_features`` and ``head``, one logit per task), and define
    ``represent`` (the network below the logit, (B, F, dim) -> (B, out_features)) and, where the
    model has logit terms that skip the network (first order, FM), ``wide``.
    """

    head: nn.Linear | None
    out_features: int

    def __init__(self, embedding: FieldEmbedding | None, fields: int, dim: int, tasks: int = 1) -> None:
        super().__init__()
        self.embedding = embedding
        self.num_fields, self.dim, self.tasks = fields, dim, tasks

    def _output(self, out_features: int) -> None:
        self.out_features = out_features
        self.head = None if self.embedding is None else nn.Linear(out_features, self.tasks)

    def represent(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def wide(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        """(B,) logit terms outside the network, or None."""
        return None

    @property
    def feature_width(self) -> int:
        return self.out_features + (1 if type(self).wide is not Backbone.wide else 0)

    def features(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(B, feature_width): the representation, and the wide logit as one more column —
        what a multi-domain model's towers read when this network is its bottom or expert."""
        deep, wide = self.represent(fields, batch), self.wide(fields, batch)
        return deep if wide is None else torch.cat([deep, wide.unsqueeze(1)], 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        """-> logits (B,), or (B, tasks) with several tasks (the wide terms shared by all)."""
        fields = self.embedding(batch)
        logit = self.head(self.represent(fields, batch))
        logit = logit.squeeze(-1) if self.tasks == 1 else logit
        wide = self.wide(fields, batch)
        if wide is None:
            return logit
        return logit + (wide if self.tasks == 1 else wide.unsqueeze(1))
