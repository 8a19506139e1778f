"""What every deep backbone shares: embedding -> network -> logit, plus wide logit terms.

Splitting a backbone this way lets the multi-domain family (shared-bottom, MMoE, PLE, DADNN)
use any backbone's network as its shared bottom or as its experts, over one shared embedding,
without a copy of the backbone's code.
"""

from __future__ import annotations

import torch
from torch import nn

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.data.schema import InputSpec
from mdctr.nn.embedding import FieldEmbedding, embedding_from_config


class Backbone(nn.Module):
    """``logit = head(represent(fields)) + wide(fields)`` with ``fields = embedding(batch)``.

    Subclasses build their network between ``_embed`` (sets ``embedding`` and ``num_fields``)
    and ``_output`` (sets ``out_features`` and ``head``, one logit per task), and define ``represent`` (the network
    below the logit, (B, F, dim) -> (B, out_features)) and, where the model has logit terms that
    skip the network (first order, FM), ``wide``. With ``body_only`` the backbone has neither
    embedding nor head: it is a bottom or expert of a multi-domain model, which embeds once.
    """

    embedding: FieldEmbedding | None
    head: nn.Linear | None
    num_fields: int
    out_features: int

    def __init__(self, body_only: bool) -> None:
        super().__init__()
        self.body_only = body_only

    def _embed(self, spec: InputSpec, cfg: ModelConfig) -> None:
        self.embedding = None if self.body_only else embedding_from_config(spec, cfg)
        self.num_fields = spec.fields(cfg.domain_as_feature)
        self.tasks = spec.tasks

    def _output(self, out_features: int) -> None:
        self.out_features = out_features
        self.head = None if self.body_only else nn.Linear(out_features, self.tasks)

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
