"""DCNv2 (Wang et al., WWW 2021): an explicit cross network and an MLP, stacked or in parallel."""

from __future__ import annotations

import torch

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.data.schema import InputSpec
from mdctr.models.backbone import Backbone
from mdctr.nn.interaction import CrossNetwork
from mdctr.nn.mlp import mlp_from_config


class DCNv2(Backbone):
    """flat embeddings x0 -> stacked: MLP(cross(x0)); parallel: [cross(x0), MLP(x0)] -> Linear -> logits."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig, body_only: bool = False) -> None:
        super().__init__(body_only)
        self._embed(spec, cfg)
        width = self.num_fields * cfg.embedding_dim
        c = cfg.cross
        self.cross = CrossNetwork(width, c.layers, c.rank, c.experts)
        self.parallel = c.structure == "parallel"
        self.mlp = mlp_from_config(width, cfg)
        self._output(self.mlp.out_features + (width if self.parallel else 0))

    def represent(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        x0 = fields.flatten(1)
        crossed = self.cross(x0)
        return torch.cat([crossed, self.mlp(x0)], 1) if self.parallel else self.mlp(crossed)
