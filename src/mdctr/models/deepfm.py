"""DeepFM (Guo et al., 2017): first-order + FM second-order + DNN over shared embeddings."""

from __future__ import annotations

import torch

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.data.schema import InputSpec
from mdctr.models.backbone import Backbone
from mdctr.models.linear import FirstOrder
from mdctr.nn.interaction import FactorizationMachine
from mdctr.nn.mlp import mlp_from_config


class DeepFM(Backbone):
    """logit = bias + sum(first-order weights) + FM(embeddings) + MLP(embeddings)."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig, body_only: bool = False) -> None:
        super().__init__(body_only)
        self._embed(spec, cfg)
        self.first_order = FirstOrder(spec, cfg)
        self.fm = FactorizationMachine()
        self.mlp = mlp_from_config(self.num_fields * cfg.embedding_dim, cfg)
        self._output(self.mlp.out_features)

    def represent(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.mlp(fields.flatten(1))

    def wide(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.first_order(batch) + self.fm(fields)
