"""STAR (Sheng et al., CIKM 2021): star-topology FCN (shared weights times domain weights),
partitioned normalization and an auxiliary network fed with the domain indicator."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.models.common import FlatInput
from mdctr.nn.domain import DomainLinear, DomainRouting
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.mlp import MLP, Dropout


class StarLinear(DomainLinear):
    """Domain d uses ``W ⊙ W_d`` and ``b + b_d``; ``W_d`` starts at one, ``b_d`` at zero."""

    def __init__(self, base_layer: nn.Linear, routing: DomainRouting) -> None:
        super().__init__(base_layer, routing)
        d, n_in, n_out = routing.domains, base_layer.in_features, base_layer.out_features
        self.star_weight = nn.Parameter(torch.ones(d, n_in, n_out))
        self.star_bias = nn.Parameter(torch.zeros(d, n_out))

    def domain_weights(self) -> torch.Tensor:
        shared = self.base_layer.weight.T
        return torch.cat([shared * self.star_weight, shared.unsqueeze(0)])

    def domain_biases(self) -> torch.Tensor:
        shared = self.base_layer.bias
        return torch.cat([shared + self.star_bias, shared.unsqueeze(0)])


class PartitionedNorm(nn.Module):
    """Batch norm with ``γ·γ_d`` and ``β + β_d``; training normalises with the batch's statistics
    and keeps running statistics per domain, which evaluation uses (row D: all domains)."""

    def __init__(
        self, features: int, routing: DomainRouting, momentum: float = 0.1, eps: float = 1e-5
    ) -> None:
        super().__init__()
        d = routing.domains
        self.routing, self.momentum, self.eps = routing, momentum, eps
        self.gamma = nn.Parameter(torch.ones(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.domain_gamma = nn.Parameter(torch.ones(d, features))
        self.domain_beta = nn.Parameter(torch.zeros(d, features))
        self.register_buffer("running_mean", torch.zeros(d + 1, features))
        self.register_buffer("running_var", torch.ones(d + 1, features))

    def _update(self, x: torch.Tensor) -> None:
        m = self.momentum
        with torch.no_grad():
            rows = [(x, self.routing.domains)]
            rows += [(x[a:b], d) for d, a, b in self.routing.segments or () if b - a > 1]
            for part, d in rows:
                self.running_mean[d].lerp_(part.mean(0), m)
                self.running_var[d].lerp_(part.var(0), m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        domain = self.routing.domain
        ones, zeros = x.new_ones(1, x.shape[1]), x.new_zeros(1, x.shape[1])
        scale = self.gamma * torch.cat([self.domain_gamma, ones])[domain]
        shift = self.beta + torch.cat([self.domain_beta, zeros])[domain]
        if self.training:
            mean, var = x.mean(0), x.var(0, unbiased=False)
            self._update(x)
        else:
            mean, var = self.running_mean[domain], self.running_var[domain]
        return (x - mean) * torch.rsqrt(var + self.eps) * scale + shift


class STAR(nn.Module):
    """embeddings -> partitioned norm -> star FCN (``hidden`` sizes) -> logit, plus the logit of
    the auxiliary network (a ``tower`` MLP over the embeddings and a domain embedding)."""

    def __init__(
        self,
        embedding: FieldEmbedding,
        dim: int,
        hidden: tuple[int, ...],
        dropout: float,
        domains: int,
        tower: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.routing = DomainRouting(domains)
        self.input = FlatInput(embedding, dim)
        width = self.input.out_features
        self.norm = PartitionedNorm(width, self.routing)
        sizes = (width, *hidden, 1)
        self.layers = nn.ModuleList(
            StarLinear(nn.Linear(a, b), self.routing) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.dropout = Dropout(dropout)
        self.domain_embedding = nn.Embedding(domains + 1, dim, padding_idx=domains)
        self.auxiliary = MLP(width + dim, tower, dropout)
        self.auxiliary_head = nn.Linear(self.auxiliary.out_features, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.routing.run(batch, self._forward)

    def _forward(self, batch: Batch) -> torch.Tensor:
        x = self.input(batch)
        h = self.norm(x)
        for layer in self.layers[:-1]:
            h = self.dropout(torch.relu(layer(h)))
        main = self.layers[-1](h).squeeze(-1)
        aux_in = torch.cat([x, self.domain_embedding(batch.domain)], 1)
        return main + self.auxiliary_head(self.auxiliary(aux_in)).squeeze(-1)
