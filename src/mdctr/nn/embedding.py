"""Field embeddings: every input column becomes one (B, dim) field vector."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mdctr.data.batch import Batch


@dataclass(frozen=True)
class InputSpec:
    """What the model sees: table sizes per categorical and sequence feature, numeric count, domains."""

    categorical: tuple[int, ...]
    sequence: tuple[int, ...]
    numeric: int
    domains: int

    def fields(self, domain_as_feature: bool) -> int:
        return len(self.categorical) + len(self.sequence) + self.numeric + int(domain_as_feature)


class FieldEmbedding(nn.Module):
    """Embeds a Batch into fields (B, n_fields, dim).

    Categorical features share one fused table (one lookup for all of them, rows offset per
    feature); each sequence feature is mean-pooled over its non-PAD items; each numeric feature
    scales a learned vector; the domain, when used as a feature, has its own table whose row D
    (unseen domain) is fixed at zero so an unseen domain gets the shared prediction.

    Example:
        >>> emb = FieldEmbedding(InputSpec((10, 5), (7,), 1, 2), dim=4)
        >>> emb.num_fields
        5
    """

    def __init__(
        self, spec: InputSpec, dim: int, init_std: float = 1e-4, domain_as_feature: bool = True
    ) -> None:
        super().__init__()
        self.dim = dim
        self.num_fields = spec.fields(domain_as_feature)
        sizes = torch.tensor((0, *spec.categorical), dtype=torch.long)
        self.register_buffer("offsets", torch.cumsum(sizes, 0)[:-1].clone(), persistent=False)
        self.categorical = nn.Embedding(max(int(sizes.sum()), 1), dim)
        self.sequence = nn.ModuleList(
            nn.EmbeddingBag(size, dim, mode="mean", padding_idx=0) for size in spec.sequence
        )
        self.numeric = nn.Parameter(torch.empty(spec.numeric, dim))
        self.domain = (
            nn.Embedding(spec.domains + 1, dim, padding_idx=spec.domains) if domain_as_feature else None
        )
        self.reset_parameters(init_std)

    def reset_parameters(self, init_std: float) -> None:
        with torch.no_grad():
            for table in (self.categorical, *self.sequence, self.domain):
                if table is not None:
                    nn.init.normal_(table.weight, std=init_std)
                    if table.padding_idx is not None:
                        table.weight[table.padding_idx].zero_()
            nn.init.normal_(self.numeric, std=init_std)

    def forward(self, batch: Batch) -> torch.Tensor:
        parts = []
        if batch.sparse.shape[1]:
            parts.append(self.categorical(batch.sparse + self.offsets))
        pool = _traceable_mean if torch.compiler.is_exporting() else _bag_mean
        parts.extend(
            pool(bag, ids).unsqueeze(1) for bag, ids in zip(self.sequence, batch.sequences, strict=True)
        )
        if self.numeric.shape[0]:
            parts.append(batch.dense.unsqueeze(-1) * self.numeric)
        if self.domain is not None:
            parts.append(self.domain(batch.domain).unsqueeze(1))
        return torch.cat(parts, dim=1)


def _bag_mean(bag: nn.EmbeddingBag, ids: torch.Tensor) -> torch.Tensor:
    return bag(ids)


def _traceable_mean(bag: nn.EmbeddingBag, ids: torch.Tensor) -> torch.Tensor:
    """``bag(ids)`` as a lookup and a masked mean: exports to a few dense ONNX ops, where
    EmbeddingBag becomes a per-row loop."""
    mask = (ids != bag.padding_idx).unsqueeze(-1).to(bag.weight.dtype)
    return (nn.functional.embedding(ids, bag.weight) * mask).sum(1) / mask.sum(1).clamp(min=1)
