"""The linear family: LR, FM and Wide & Deep share one first-order (wide) part."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.data.schema import InputSpec
from mdctr.models.backbone import Backbone
from mdctr.nn.embedding import embedding_from_config
from mdctr.nn.interaction import FactorizationMachine
from mdctr.nn.mlp import mlp_from_config


class FirstOrder(nn.Module):
    """bias + one learned weight per feature value (a 1-dim field embedding): (B,)."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.embedding = embedding_from_config(spec, cfg, first_order=True)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.bias + self.embedding(batch).sum(dim=(1, 2))


class LR(nn.Module):
    """Logistic regression over every feature value (and the domain)."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.first_order = FirstOrder(spec, cfg)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.first_order(batch)


class FM(nn.Module):
    """Factorization machine (Rendle, 2010): first order + pairwise <e_i, e_j> over fields."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.first_order = FirstOrder(spec, cfg)
        self.embedding = embedding_from_config(spec, cfg)
        self.fm = FactorizationMachine()

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.first_order(batch) + self.fm(self.embedding(batch))


class WideDeep(Backbone):
    """Wide & Deep (Cheng et al., 2016): the first-order wide part + an MLP over the embeddings."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig, body_only: bool = False) -> None:
        super().__init__(body_only)
        self._embed(spec, cfg)
        self.first_order = FirstOrder(spec, cfg)
        self.mlp = mlp_from_config(self.num_fields * cfg.embedding_dim, cfg)
        self._output(self.mlp.out_features)

    def represent(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.mlp(fields.flatten(1))

    def wide(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.first_order(batch)
