"""Tensors on disk: safetensors only (never pickle), written atomically."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

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
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata() or {}  # noqa: SIM118
    except (SafetensorError, ValueError, OSError) as err:
        raise InputError(f"{path} is damaged ({err}); train the run again") from None
