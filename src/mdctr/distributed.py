"""Data-parallel training over ``torch.distributed``: the process group a launcher
(``torchrun``, or ``mdctr train --nproc N``) describes in the environment, each rank's share of
the rows, and the collectives training and evaluation need (gathering scores for an exact
metric over the whole split, every rank's RNG state for a checkpoint).

One process (no launcher) is a world of size 1, where every function here is the identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from mdctr.errors import InputError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: ``rank`` of ``size``, and the device
    it computes on."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Whether this process writes the run directory (rank 0)."""
        return self.rank == 0

    @property
    def backend(self) -> str | None:
        return dist.get_backend() if self.size > 1 else None


def env_int(name: str, default: int) -> int:
    """An integer a launcher put in the environment; a malformed one is an InputError."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(
            f"environment variable {name}={value!r} is not an integer; unset it or fix it"
        ) from None


def world() -> World:
    """The world a launcher set up (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ...), joined on the
    first call: gloo on CPU, nccl when CUDA is there; size 1 without a launcher."""
    size = env_int("WORLD_SIZE", 1)
    if size == 1:
        return World()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", env_int("LOCAL_RANK", 0)) if cuda else torch.device("cpu")
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), device)


def all_gather_rows(array: np.ndarray, w: World) -> np.ndarray:
    """Every rank's rows of ``array`` concatenated in rank order (identity for one process)."""
    if w.size == 1:
        return array
    local = torch.from_numpy(np.ascontiguousarray(array)).to(w.device)
    counts = torch.tensor([local.shape[0]], device=w.device)
    sizes = [torch.zeros_like(counts) for _ in range(w.size)]
    dist.all_gather(sizes, counts)
    longest = int(max(int(s) for s in sizes))
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(w.size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes, strict=True)]).cpu().numpy()


def mean_over_ranks(value: float, w: World) -> float:
    """The mean of every rank's ``value`` (the value itself for one process)."""
    if w.size == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=w.device)
    dist.all_reduce(total)
    return float(total) / w.size


def gather_rng(w: World) -> list[torch.Tensor]:
    """Every rank's torch RNG state, in rank order (rank 0 writes them into a checkpoint)."""
    state = torch.get_rng_state()
    if w.size == 1:
        return [state]
    parts = [torch.empty_like(state) for _ in range(w.size)]
    dist.all_gather(parts, state)
    return parts


def barrier(w: World) -> None:
    """Wait for every rank (nothing for one process)."""
    if w.size > 1:
        dist.barrier()
