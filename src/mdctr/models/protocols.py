"""What the trainer may ask of a model, declared: the contract between models and recipes.

Every model maps a Batch to logits, (B,) for one task or (B, tasks). Beyond that a model (or
any of its submodules, for the per-batch hooks) may be:

- ``AuxiliaryLoss``: ``extra_loss()``, a loss term from its last training forward, added to
  the objective;
- ``Progressive``: ``set_progress(fraction)``, told how far training is (0 to 1) before each
  epoch, for continuation schedules;
- ``Adapted``: ``adapter_parameters()``, trained with the adapter learning rate and weight decay,
  and ``set_adapters(enabled)``; ``recipe: adapters`` trains them alone;
- ``Staged``: ``training_stages()``, the stages of ``recipe: two_stage``;
- ``DomainParts``: ``domain_parts()``, independent per-domain parts, early-stopped one by one;
- ``Frozen``: ``frozen_parameters()``, a part no recipe trains (CTNet's source tower).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@dataclass(frozen=True)
class Stage:
    """One training stage: which parameters learn, and how to set the model up for it."""

    name: str
    parameters: Callable[[], list[nn.Parameter]]
    enter: Callable[[], None]
    adapter: bool = True


@runtime_checkable
class AuxiliaryLoss(Protocol):
    def extra_loss(self) -> torch.Tensor: ...


@runtime_checkable
class Progressive(Protocol):
    def set_progress(self, fraction: float) -> None: ...


@runtime_checkable
class Adapted(Protocol):
    def adapter_parameters(self) -> list[nn.Parameter]: ...

    def set_adapters(self, enabled: bool) -> None: ...


@runtime_checkable
class Staged(Protocol):
    def training_stages(self) -> list[Stage]: ...


@runtime_checkable
class DomainParts(Protocol):
    def domain_parts(self) -> list[nn.Module]: ...


@runtime_checkable
class Frozen(Protocol):
    def frozen_parameters(self) -> list[nn.Parameter]: ...


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The model's adapter parameters (empty for a model without adapters)."""
    return list(model.adapter_parameters()) if isinstance(model, Adapted) else []


def shared_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter that is not an adapter parameter."""
    adapters = {id(p) for p in adapter_parameters(model)}
    return [p for p in model.parameters() if id(p) not in adapters]


def joint_stage(model: nn.Module) -> Stage:
    """Everything at once (but a model's frozen part)."""
    frozen = {id(p) for p in model.frozen_parameters()} if isinstance(model, Frozen) else set()
    return Stage(
        "joint", lambda: [p for p in model.parameters() if id(p) not in frozen], lambda: None, adapter=False
    )


def adapter_stage(model: nn.Module, tables: bool = False) -> Stage:
    """The adapters alone, as they are (no re-initialisation), the rest frozen: an update that
    keeps the shared network of an adapted model fixed; with ``tables``, the embedding tables
    learn too."""
    if not adapter_parameters(model):
        raise ValueError(f"model {type(model).__name__} has no adapters")

    def enter() -> None:
        model.set_adapters(True)  # type: ignore[operator]

    def parameters() -> list[nn.Parameter]:
        embeddings = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)] if tables else []
        return adapter_parameters(model) + embeddings

    return Stage("adapters+tables" if tables else "adapters", parameters, enter)


def stages_for(model: nn.Module, recipe: str, tables: bool = False) -> list[Stage]:
    """The stages a recipe runs on a model (``tables``: see ``adapter_stage``)."""
    if recipe == "joint":
        return [joint_stage(model)]
    if recipe == "adapters":
        return [adapter_stage(model, tables)]
    if not isinstance(model, Staged):
        raise ValueError(f"model {type(model).__name__} has no training stages for recipe {recipe!r}")
    return list(model.training_stages())
