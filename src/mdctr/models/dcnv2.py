"""DCNv2 (Wang et al., WWW 2021): an explicit cross network and an MLP, stacked or in parallel."""

from __future__ import annotations

import torch

from mdctr.data.batch import Batch
from mdctr.models.backbone import Backbone
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.interaction import CrossNetwork
from mdctr.nn.mlp import MLPLayers


class DCNv2(Backbone):
    """flat embeddings x0 -> stacked: MLP(cross(x0)); parallel: [cross(x0), MLP(x0)] -> Linear -> logits.

    ``cross_layers`` cross layers, full rank, or with ``rank`` low-rank layers mixing ``experts``
    experts (DCN-Mix).
    """

    def __init__(
        self,
        embedding: FieldEmbedding | None,
        fields: int,
        dim: int,
        mlp: MLPLayers,
        cross_layers: int,
        parallel: bool,
        rank: int | None = None,
        experts: int = 1,
        tasks: int = 1,
    ) -> None:
        super().__init__(embedding, fields, dim, tasks)
        width = fields * dim
        self.cross = CrossNetwork(width, cross_layers, rank, experts)
        self.parallel = parallel
        self.mlp = mlp.build(width)
        self._output(self.mlp.out_features + (width if parallel else 0))

    def represent(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        x0 = fields.flatten(1)
        crossed = self.cross(x0)
        return torch.cat([crossed, self.mlp(x0)], 1) if self.parallel else self.mlp(crossed)
