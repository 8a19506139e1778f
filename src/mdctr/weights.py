"""Tensors on disk: safetensors only (never pickle), written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from mdctr.data.cache import atomic_write_bytes
from mdctr.errors import InputError


def save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write named tensors (and string metadata) to ``path`` atomically."""
    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save(data, metadata=metadata))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read named tensors and metadata; a missing or damaged file is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} not found; the run directory is incomplete, train it again")
    raw = path.read_bytes()
    try:
        tensors = load(raw)
    except (SafetensorError, ValueError) as err:
        raise InputError(f"{path} is damaged ({err}); train the run again") from None
    header_len = int.from_bytes(raw[:8], "little")
    metadata = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {}) or {}
    return tensors, metadata
