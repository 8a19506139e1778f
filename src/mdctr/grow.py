"""Growing a trained model into a larger input: new vocabulary values and new domains get fresh
rows, every old row keeps its value bit for bit (weights and optimizer state alike).

Rows follow their values: a value's row in the old model goes to that value's row in the new
one (PAD and OOV stay rows 0 and 1), wherever the new vocabulary put it. Usually vocabularies
only grow by appending (``Encoder.extended``), and then all that moves is where a feature's rows
start in a fused table, when an earlier feature grew; a CTNet target grown onto its source's
vocabularies may also see its values in another order. Every other tensor that grew did so
along dim 0 (per-domain rows) and keeps its old rows first, so the old domains must come first
in the new encoder. Where a model keeps a row D for the unseen domain (single-domain models'
domain field, MLoRA, STAR, PEPNet), a new domain takes it, so it starts from what the parent
predicted for a domain it had not seen, and the new unseen row keeps the new model's
initialisation; models with a tower per domain (and an unseen domain scored by the mean of the
towers) start a new domain's tower fresh.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mdctr.data.encode import Encoder
from mdctr.nn.embedding import FieldEmbedding, fused_starts

Rows = tuple[torch.Tensor, torch.Tensor]  # (old rows, the new rows they go to)


def _value_rows(old: Encoder, new: Encoder, vocabulary: str) -> Rows:
    """Ids of the old vocabulary's values (PAD, OOV first) and their ids in the new one."""
    index = {v: i for i, v in enumerate(new.vocabs[vocabulary], 2)}
    pairs = [(0, 0), (1, 1)] + [(i, index[v]) for i, v in enumerate(old.vocabs[vocabulary], 2) if v in index]
    ids = torch.tensor(pairs, dtype=torch.long)
    return ids[:, 0], ids[:, 1]


def _is_prefix(old: Encoder, new: Encoder) -> bool:
    return all(new.vocabs[k][: len(v)] == v for k, v in old.vocabs.items())


def row_maps(model: nn.Module, old: Encoder, new: Encoder) -> dict[str, Rows]:
    """State-dict keys whose rows follow their values (embedding tables and OptFS gates), with
    where each old row goes; a ValueError when the two encoders do not fit together."""
    if old.schema != new.schema:
        raise ValueError("the features changed; only their vocabularies may grow")
    if new.domains[: len(old.domains)] != old.domains:
        raise ValueError(f"the old domains {old.domains} must come first in the new {new.domains}")
    old_spec, new_spec = old.input_spec(), new.input_spec()
    starts_old, starts_new = fused_starts(old_spec), fused_starts(new_spec)
    rows_old, rows_new = [], []
    for f, name in enumerate(old.categorical):
        if old_spec.table_of(f) == f:  # an owner of rows in the fused table
            a, b = _value_rows(old, new, old.schema.feature(name).vocabulary)
            rows_old.append(a + starts_old[f])
            rows_new.append(b + starts_new[f])
    fused_rows = (torch.cat(rows_old), torch.cat(rows_new)) if rows_old else None
    n = len(old.categorical)
    own_sequences = [name for i, name in enumerate(old.sequence) if old_spec.table_of(n + i) == n + i]
    maps: dict[str, Rows] = {}
    for module_name, module in model.named_modules():
        if not isinstance(module, FieldEmbedding):
            continue
        prefix = f"{module_name}." if module_name else ""
        if module.hash is not None:
            if not _is_prefix(old, new):
                raise ValueError(
                    "hashed embeddings hash ids: they grow only by appending to the vocabularies"
                )
            continue
        if fused_rows is not None:
            maps[f"{prefix}categorical.weight"] = fused_rows
            if module.gate is not None:
                maps[f"{prefix}gate.logit"] = fused_rows
        for j, name in enumerate(own_sequences):
            maps[f"{prefix}sequence.{j}.weight"] = _value_rows(old, new, name)
    return maps


def grown(key: str, old: torch.Tensor, target: torch.Tensor, maps: Mapping[str, Rows]) -> torch.Tensor:
    """``old`` placed into a copy of ``target`` (the new initialisation): rows moved to their
    values' rows for a table, the leading rows for anything else that grew along dim 0, the
    whole of it otherwise."""
    out = target.detach().clone()
    if key in maps and old.dim() > 0 and old.shape[1:] == target.shape[1:]:
        rows_old, rows_new = maps[key]
        out[rows_new] = old[rows_old]
    elif old.shape == target.shape:
        out.copy_(old)
    elif old.dim() > 0 and old.shape[1:] == target.shape[1:] and old.shape[0] < target.shape[0]:
        out[: old.shape[0]] = old
    else:
        raise ValueError(f"cannot grow {key}: {tuple(old.shape)} -> {tuple(target.shape)}")
    return out


@torch.no_grad()
def grow_state(
    old: Mapping[str, torch.Tensor], model: nn.Module, old_encoder: Encoder, new_encoder: Encoder
) -> None:
    """Load a state trained with ``old_encoder`` into ``model`` built for ``new_encoder``;
    parameters the old state lacks (a new domain's own model) keep their initialisation."""
    maps = row_maps(model, old_encoder, new_encoder)
    state = model.state_dict()
    unknown = sorted(set(old) - set(state))
    if unknown:
        raise ValueError(f"the old state has keys the model lacks: {unknown[:3]}")
    for key, value in old.items():
        state[key].copy_(grown(key, value, state[key], maps))
