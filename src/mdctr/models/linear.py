"""The linear family: LR, FM and Wide & Deep share one first-order (wide) part."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.models.backbone import Backbone
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.interaction import FactorizationMachine
from mdctr.nn.mlp import MLPLayers


class FirstOrder(nn.Module):
    """bias + one learned weight per feature value, from a 1-dim field ``embedding``: (B,)."""

    def __init__(self, embedding: FieldEmbedding) -> None:
        super().__init__()
        self.embedding = embedding
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.bias + self.embedding(batch).sum(dim=(1, 2))


class LR(nn.Module):
    """Logistic regression over every feature value (and the domain)."""

    def __init__(self, first_order: FirstOrder) -> None:
        super().__init__()
        self.first_order = first_order

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.first_order(batch)


class FM(nn.Module):
    """Factorization machine (Rendle, 2010): first order + pairwise <e_i, e_j> over fields."""

    def __init__(self, first_order: FirstOrder, embedding: FieldEmbedding) -> None:
        super().__init__()
        self.first_order = first_order
        self.embedding = embedding
        self.fm = FactorizationMachine()

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.first_order(batch) + self.fm(self.embedding(batch))


class WideDeep(Backbone):
    """Wide & Deep (Cheng et al., 2016): the first-order wide part + an MLP over the embeddings."""

    def __init__(
        self,
        embedding: FieldEmbedding | None,
        fields: int,
        dim: int,
        mlp: MLPLayers,
        first_order: FirstOrder,
        tasks: int = 1,
    ) -> None:
        super().__init__(embedding, fields, dim, tasks)
        self.first_order = first_order
        self.mlp = mlp.build(fields * dim)
        self._output(self.mlp.out_features)

    def represent(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.mlp(fields.flatten(1))

    def wide(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.first_order(batch)
