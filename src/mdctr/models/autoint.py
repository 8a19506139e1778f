"""AutoInt (Song et al., CIKM 2019): self-attentive interacting layers over the field
embeddings; AutoInt+ adds an MLP over the same embeddings and sums the two logits."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.data.schema import InputSpec
from mdctr.models.backbone import Backbone
from mdctr.nn.interaction import InteractingLayer
from mdctr.nn.mlp import mlp_from_config


class AutoInt(Backbone):
    """fields (B, F, dim) -> interacting layers -> flatten [, MLP(flat fields)] -> Linear. (One
    Linear over both parts is AutoInt+'s sum of two logits.)"""

    def __init__(
        self, spec: InputSpec, cfg: ModelConfig, body_only: bool = False, with_mlp: bool = False
    ) -> None:
        super().__init__(body_only)
        self._embed(spec, cfg)
        a, fields = cfg.attention, self.num_fields
        dims = [cfg.embedding_dim] + [a.heads * a.dim] * a.layers
        self.attention = nn.ModuleList(InteractingLayer(d, a.dim, a.heads, a.residual) for d in dims[:-1])
        self.mlp = mlp_from_config(fields * cfg.embedding_dim, cfg) if with_mlp else None
        self._output(fields * dims[-1] + (self.mlp.out_features if self.mlp is not None else 0))

    def represent(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        x = fields
        for layer in self.attention:
            x = layer(x)
        if self.mlp is None:
            return x.flatten(1)
        return torch.cat([x.flatten(1), self.mlp(fields.flatten(1))], 1)


def autoint_plus(spec: InputSpec, cfg: ModelConfig, body_only: bool = False) -> AutoInt:
    """AutoInt+: interacting layers and an MLP, logits summed."""
    return AutoInt(spec, cfg, body_only, with_mlp=True)
