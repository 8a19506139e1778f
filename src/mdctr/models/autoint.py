"""AutoInt (Song et al., CIKM 2019): self-attentive interacting layers over the field
embeddings; AutoInt+ adds an MLP over the same embeddings and sums the two logits."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.models.backbone import Backbone
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.interaction import InteractingLayer
from mdctr.nn.mlp import MLPLayers


class AutoInt(Backbone):
    """fields (B, F, dim) -> ``layers`` interacting layers (``heads`` heads of ``head_dim``) ->
    flatten [, MLP(flat fields)] -> Linear. (One Linear over both parts is AutoInt+'s sum of
    two logits; ``mlp`` None is AutoInt.)"""

    def __init__(
        self,
        embedding: FieldEmbedding | None,
        fields: int,
        dim: int,
        layers: int,
        heads: int,
        head_dim: int,
        residual: bool,
        mlp: MLPLayers | None = None,
        tasks: int = 1,
    ) -> None:
        super().__init__(embedding, fields, dim, tasks)
        dims = [dim] + [heads * head_dim] * layers
        self.attention = nn.ModuleList(InteractingLayer(d, head_dim, heads, residual) for d in dims[:-1])
        self.mlp = mlp.build(fields * dim) if mlp is not None else None
        self._output(fields * dims[-1] + (self.mlp.out_features if self.mlp is not None else 0))

    def represent(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        x = fields
        for layer in self.attention:
            x = layer(x)
        if self.mlp is None:
            return x.flatten(1)
        return torch.cat([x.flatten(1), self.mlp(fields.flatten(1))], 1)
