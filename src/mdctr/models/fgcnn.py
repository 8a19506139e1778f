"""FGCNN (Liu et al., WWW 2019): a CNN generates new feature fields from the embedding matrix,
and an IPNN-style classifier (pairwise inner products + MLP) reads raw and new fields together."""

from __future__ import annotations

import math

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.models.backbone import Backbone
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.interaction import PairwiseInnerProduct
from mdctr.nn.mlp import MLPLayers


class FeatureGeneration(nn.Module):
    """Per layer: conv (kernel h x 1 over fields, tanh) -> max-pool over fields -> a dense
    recombination into ``recombined`` new fields of the embedding size. (B, F, dim) -> (B, F_new, dim)."""

    def __init__(
        self,
        fields: int,
        dim: int,
        channels: tuple[int, ...],
        heights: tuple[int, ...],
        pooling: tuple[int, ...],
        recombined: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.convs, self.recombine = nn.ModuleList(), nn.ModuleList()
        previous, height = 1, fields
        for c, h, p, r in zip(channels, heights, pooling, recombined, strict=True):
            self.convs.append(
                nn.Sequential(
                    nn.Conv2d(previous, c, (h, 1), padding=(h // 2, 0)),
                    nn.Tanh(),
                    nn.MaxPool2d((p, 1), ceil_mode=True),
                )
            )
            height = math.ceil((height + 2 * (h // 2) - h + 1) / p)
            self.recombine.append(nn.Sequential(nn.Linear(c * height * dim, r * dim), nn.Tanh()))
            previous = c
        self.dim, self.new_fields = dim, sum(recombined)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        x, new = fields.unsqueeze(1), []
        for conv, recombine in zip(self.convs, self.recombine, strict=True):
            x = conv(x)
            new.append(recombine(x.flatten(1)).view(fields.shape[0], -1, self.dim))
        return torch.cat(new, 1)


class FGCNN(Backbone):
    """fields -> [fields, generated fields] -> [flat, inner products of all pairs] -> MLP -> logit.

    Per feature-generation layer: its ``channels``, kernel height, max-pooling and the new fields
    its recombination makes (``recombined``).
    """

    def __init__(
        self,
        embedding: FieldEmbedding | None,
        fields: int,
        dim: int,
        mlp: MLPLayers,
        channels: tuple[int, ...],
        kernel_heights: tuple[int, ...],
        pooling: tuple[int, ...],
        recombined: tuple[int, ...],
        tasks: int = 1,
    ) -> None:
        super().__init__(embedding, fields, dim, tasks)
        self.generate = FeatureGeneration(fields, dim, channels, kernel_heights, pooling, recombined)
        total = fields + self.generate.new_fields
        self.inner = PairwiseInnerProduct(total)
        self.mlp = mlp.build(total * dim + self.inner.out_features)
        self._output(self.mlp.out_features)

    def represent(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        every = torch.cat([fields, self.generate(fields)], 1)
        return self.mlp(torch.cat([every.flatten(1), self.inner(every)], 1))
