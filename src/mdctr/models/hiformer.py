"""Hiformer (Gui et al., 2023): heterogeneous self-attention for feature interactions.

Every field (and a learned task token) has its own query projection; keys and values are
*composite*: projected from the concatenation of all field embeddings, through a low-rank
factorisation (``attention.rank``) that keeps serving cheap. The last layer computes only the
task token's output (the pruning the paper uses for serving), which feeds the logit.
"""

from __future__ import annotations

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.models.backbone import Backbone
from mdctr.nn.embedding import FieldEmbedding


class HiformerLayer(nn.Module):
    """(B, T, d) tokens -> (B, T, d), or (B, 1, d) for the task token only (``last``)."""

    def __init__(self, tokens: int, d: int, heads: int, head_dim: int, rank: int, last: bool) -> None:
        super().__init__()
        self.heads, self.dim, self.last = heads, head_dim, last
        width = heads * head_dim
        self.query = nn.Parameter(torch.empty(1 if last else tokens, d, width))  # one projection per token
        self.key_down = nn.Linear(tokens * d, rank, bias=False)  # composite, low rank
        self.key_up = nn.Linear(rank, tokens * width, bias=False)
        self.value_down = nn.Linear(tokens * d, rank, bias=False)
        self.value_up = nn.Linear(rank, tokens * width, bias=False)
        self.out = nn.Linear(width, d)
        self.norm = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))
        self.ffn_norm = nn.LayerNorm(d)
        nn.init.xavier_uniform_(self.query)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, _ = tokens.shape
        flat = tokens.flatten(1)
        queries = tokens[:, :1] if self.last else tokens  # the task token is token 0

        def heads(x: torch.Tensor) -> torch.Tensor:  # (B, T', H*dk) -> (B, H, T', dk)
            return x.view(b, x.shape[1], self.heads, self.dim).transpose(1, 2)

        q = heads(torch.einsum("btd,tdw->btw", queries, self.query))
        k = heads(self.key_up(self.key_down(flat)).view(b, t, -1))
        v = heads(self.value_up(self.value_down(flat)).view(b, t, -1))
        attended = torch.softmax(q @ k.transpose(-1, -2) / self.dim**0.5, -1) @ v
        x = self.norm(queries + self.out(attended.transpose(1, 2).reshape(b, queries.shape[1], -1)))
        return self.ffn_norm(x + self.ffn(x))


class Hiformer(Backbone):
    """[task token, fields] -> ``layers`` Hiformer layers (``heads`` heads of ``head_dim``,
    composite keys and values of rank ``rank``) -> the task token's vector -> Linear -> logit."""

    def __init__(
        self,
        embedding: FieldEmbedding | None,
        fields: int,
        dim: int,
        layers: int,
        heads: int,
        head_dim: int,
        rank: int,
        tasks: int = 1,
    ) -> None:
        super().__init__(embedding, fields, dim, tasks)
        tokens = fields + 1
        self.task_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.layers = nn.ModuleList(
            HiformerLayer(tokens, dim, heads, head_dim, rank, last=i == layers - 1) for i in range(layers)
        )
        self._output(dim)
        nn.init.normal_(self.task_token, std=0.02)

    def represent(self, fields: torch.Tensor, batch: Batch) -> torch.Tensor:
        x = torch.cat([self.task_token.expand(fields.shape[0], -1, -1), fields], 1)
        for layer in self.layers:
            x = layer(x)
        return x[:, 0]
