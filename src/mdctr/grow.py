"""Growing a trained model into a larger input: new vocabulary values and new domains get fresh
rows, every old row keeps its value bit for bit (weights and optimizer state alike).

Vocabularies grow by appending (``Encoder.extended``), so an old id keeps its number within its
feature; what moves is where a feature's rows start in a fused table, when an earlier feature
grew. ``row_maps`` says where each old row lands; every other tensor that grew did so along
dim 0 (per-domain rows, own tables) and keeps its old rows first. Where a model keeps a row D
for the unseen domain (single-domain models' domain field, MLoRA, STAR, PEPNet), a new domain
takes it, so it starts from what the parent predicted for a domain it had not seen, and the
new unseen row keeps the new model's initialisation; models with a tower per domain (and an
unseen domain scored by the mean of the towers) start a new domain's tower fresh.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mdctr.data.schema import InputSpec
from mdctr.nn.embedding import FieldEmbedding, fused_starts

Segments = tuple[tuple[int, int, int], ...]  # (old first row, new first row, rows)


def _fused_segments(old: InputSpec, new: InputSpec) -> Segments:
    """Where each owned categorical vocabulary's old rows sit in the new fused table."""
    if len(old.categorical) != len(new.categorical) or old.owner != new.owner:
        raise ValueError("the features changed; only their vocabularies may grow")
    return tuple(
        (a, b, size)
        for f, (a, b, size) in enumerate(
            zip(fused_starts(old), fused_starts(new), old.categorical, strict=True)
        )
        if old.table_of(f) == f
    )


def row_maps(model: nn.Module, old: InputSpec, new: InputSpec) -> dict[str, Segments]:
    """State-dict keys whose rows move (fused tables and their OptFS gates), with the moves."""
    maps: dict[str, Segments] = {}
    for name, module in model.named_modules():
        if isinstance(module, FieldEmbedding) and module.hash is None:
            prefix = f"{name}." if name else ""
            segments = _fused_segments(old, new)
            maps[f"{prefix}categorical.weight"] = segments
            if module.gate is not None:
                maps[f"{prefix}gate.logit"] = segments
    return maps


def grown(key: str, old: torch.Tensor, target: torch.Tensor, maps: Mapping[str, Segments]) -> torch.Tensor:
    """``old`` placed into a copy of ``target`` (the new initialisation): moved rows for a fused
    table, the leading rows for anything else that grew along dim 0, the whole of it otherwise."""
    out = target.detach().clone()
    if key in maps and old.dim() > 0 and old.shape[0] != target.shape[0]:
        for a, b, rows in maps[key]:
            out[b : b + rows] = old[a : a + rows]
    elif old.shape == target.shape:
        out.copy_(old)
    elif old.dim() > 0 and old.shape[1:] == target.shape[1:] and old.shape[0] < target.shape[0]:
        out[: old.shape[0]] = old
    else:
        raise ValueError(f"cannot grow {key}: {tuple(old.shape)} -> {tuple(target.shape)}")
    return out


@torch.no_grad()
def grow_state(
    old: Mapping[str, torch.Tensor], model: nn.Module, old_spec: InputSpec, new_spec: InputSpec
) -> None:
    """Load a state trained on ``old_spec`` into ``model`` built for ``new_spec``; parameters the
    old state lacks (a new domain's own model) keep their initialisation."""
    maps = row_maps(model, old_spec, new_spec)
    state = model.state_dict()
    unknown = sorted(set(old) - set(state))
    if unknown:
        raise ValueError(f"the old state has keys the model lacks: {unknown[:3]}")
    for key, value in old.items():
        state[key].copy_(grown(key, value, state[key], maps))
