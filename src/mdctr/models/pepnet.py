"""PEPNet (Chang et al., KDD 2023): EPNet gates the embeddings by domain, PPNet gates every
hidden layer by a persona; gates are GateNU with γ = 2 and stop-gradient on the gated input."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.mlp import DenseBlock, MLPLayers


class GateNU(nn.Module):
    """``γ · sigmoid(W2 relu(W1 x))``: scales in (0, γ), about 1 at the start."""

    def __init__(self, in_features: int, out_features: int, gamma: float = 2.0) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, out_features)
        self.out = nn.Linear(out_features, out_features)
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.sigmoid(self.out(torch.relu(self.hidden(x))))


class PEPNet(nn.Module):
    """Domain embedding ⊕ stop-grad(fields) -> EPNet field gates; domain embedding ⊕
    stop-grad(gated fields) -> one PPNet gate per hidden layer."""

    def __init__(self, embedding: FieldEmbedding, dim: int, mlp: MLPLayers, domains: int) -> None:
        """``embedding`` without a domain field (the domain drives the gates); ``mlp``: the gated
        layers' sizes, dropout and batch norm."""
        super().__init__()
        self.embedding = embedding
        fields = self.embedding.num_fields
        self.domain_embedding = nn.Embedding(domains + 1, dim, padding_idx=domains)
        self.epnet = GateNU(dim + fields * dim, fields)
        sizes = (fields * dim, *mlp.hidden)
        self.layers = nn.ModuleList(
            DenseBlock(a, b, mlp.dropout, mlp.batch_norm) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.ppnet = nn.ModuleList(GateNU(dim + fields * dim, b) for b in mlp.hidden)
        self.head = nn.Linear(sizes[-1], 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding(batch)
        domain = self.domain_embedding(batch.domain)
        gate = self.epnet(torch.cat([domain, fields.flatten(1).detach()], 1))
        h = (fields * gate.unsqueeze(-1)).flatten(1)
        persona = torch.cat([domain, h.detach()], 1)
        for layer, ppnet in zip(self.layers, self.ppnet, strict=True):
            h = layer(h) * ppnet(persona)
        return self.head(h).squeeze(-1)
