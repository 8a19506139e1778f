"""Model names in the config -> builder functions. An explicit dict, nothing imported by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mdctr.config import ModelConfig
from mdctr.models.deepfm import DeepFM
from mdctr.models.dnn import DNN
from mdctr.nn.embedding import InputSpec

Builder = Callable[[InputSpec, ModelConfig], nn.Module]

BACKBONES: dict[str, Builder] = {
    "dnn": DNN,
    "deepfm": DeepFM,
}


def _shared(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
    """One shared model for all domains (the domain enters as a feature)."""
    return BACKBONES[cfg.backbone](spec, cfg)


MULTIDOMAIN: dict[str, Builder] = {
    "none": _shared,
}


def build_model(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
    """The model a config names: its backbone, made multi-domain by ``cfg.multidomain``."""
    return MULTIDOMAIN[cfg.multidomain](spec, cfg)
