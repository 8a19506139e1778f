"""What a multi-domain model trains, in which order: the contract between models and recipes.

A model may offer ``training_stages()`` (for ``recipe: two_stage``), ``adapter_parameters()``
(trained with the adapter learning rate and weight decay) and ``extra_loss()`` (an auxiliary
loss from its last training forward, added by the trainer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Stage:
    """One training stage: which parameters learn, and how to set the model up for it."""

    name: str
    parameters: Callable[[], list[nn.Parameter]]
    enter: Callable[[], None]
    adapter: bool = True


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The model's adapter parameters (empty for a model without adapters)."""
    get = getattr(model, "adapter_parameters", None)
    return list(get()) if get is not None else []


def shared_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter that is not an adapter parameter."""
    adapters = {id(p) for p in adapter_parameters(model)}
    return [p for p in model.parameters() if id(p) not in adapters]


def joint_stage(model: nn.Module) -> Stage:
    """Everything at once."""
    return Stage("joint", lambda: list(model.parameters()), lambda: None, adapter=False)


def stages_for(model: nn.Module, recipe: str) -> list[Stage]:
    """The stages a recipe runs on a model."""
    if recipe == "joint":
        return [joint_stage(model)]
    get = getattr(model, "training_stages", None)
    if get is None:
        raise ValueError(f"model {type(model).__name__} has no training stages for recipe {recipe!r}")
    return list(get())
