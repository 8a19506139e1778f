"""PLE (Tang et al., RecSys 2020): shared and domain-specific experts, progressively extracted."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.models.common import Experts
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.heads import DomainTowers, select_domain
from mdctr.nn.mlp import GroupedMLP


class ExtractionLevel(nn.Module):
    """One CGC level: S shared experts and K experts per domain. Domain d's gate mixes its own K
    experts and the S shared ones; below the last level a shared gate mixes all experts. The
    first level's experts read the field embeddings (the backbone's network, ``make_body``);
    later levels' experts are MLPs over the previous level's outputs."""

    def __init__(
        self,
        experts: Experts | GroupedMLP,
        in_features: int,
        shared: int,
        per_domain: int,
        domains: int,
        last: bool,
    ) -> None:
        """``experts``: the ``shared + domains * per_domain`` experts (an ``Experts`` over the
        field embeddings on the first level, a GroupedMLP over the level below after it)."""
        super().__init__()
        s, k = shared, per_domain
        self.experts = experts
        source = [0] * s + [1 + d for d in range(domains) for _ in range(k)]
        chosen = [[s + d * k + j for j in range(k)] + list(range(s)) for d in range(domains)]
        self.register_buffer("source", torch.tensor(source), persistent=False)
        self.register_buffer("chosen", torch.tensor(chosen), persistent=False)
        self.gate_weight = nn.Parameter(torch.empty(domains, in_features, k + s))
        self.gate_bias = nn.Parameter(torch.zeros(domains, k + s))
        nn.init.uniform_(self.gate_weight, -(in_features**-0.5), in_features**-0.5)
        self.shared_gate = None if last else nn.Linear(in_features, s + domains * k)
        self.out_features = self.experts.out_features

    def forward(
        self, shared: torch.Tensor, per_domain: torch.Tensor | None, fields: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """shared (B, in), per_domain (B, D, in) or None on the first level (where ``shared`` is
        the flat ``fields`` and every gate sees it)."""
        if per_domain is None:
            experts = self.experts(fields, batch)
            gate_in = shared.unsqueeze(1).expand(-1, self.gate_weight.shape[0], -1)
        else:
            experts = self.experts(torch.cat([shared.unsqueeze(1), per_domain], 1)[:, self.source])
            gate_in = per_domain
        gates = torch.softmax(torch.einsum("bdi,dio->bdo", gate_in, self.gate_weight) + self.gate_bias, -1)
        domain_out = (gates.unsqueeze(-1) * experts[:, self.chosen]).sum(2)  # (B, D, H)
        if self.shared_gate is None:
            return shared, domain_out
        shared_out = torch.bmm(torch.softmax(self.shared_gate(shared), -1).unsqueeze(1), experts).squeeze(1)
        return shared_out, domain_out


class PLE(nn.Module):
    """embeddings -> extraction levels -> a ``tower`` MLP per domain."""

    def __init__(
        self,
        embedding: FieldEmbedding,
        levels: list[ExtractionLevel],
        domains: int,
        tower: tuple[int, ...],
        dropout: float,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.levels = nn.ModuleList(levels)
        self.towers = DomainTowers(levels[-1].out_features, tower, domains, dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding(batch)
        shared, per_domain = fields.flatten(1), None
        for level in self.levels:
            shared, per_domain = level(shared, per_domain, fields, batch)
        return select_domain(self.towers(per_domain), batch.domain)
