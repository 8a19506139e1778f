"""Model names in the config -> builder functions. An explicit dict, nothing imported by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mdctr.config import ModelConfig
from mdctr.models.deepfm import DeepFM
from mdctr.models.dnn import DNN
from mdctr.models.mlora import MLoRA
from mdctr.nn.embedding import InputSpec

Builder = Callable[[InputSpec, ModelConfig], nn.Module]

BACKBONES: dict[str, Builder] = {
    "dnn": DNN,
    "deepfm": DeepFM,
}


def _shared(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
    """One shared model for all domains (the domain enters as a feature)."""
    return BACKBONES[cfg.backbone](spec, cfg)


def _mlora(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
    """The backbone with per-domain low-rank adapters (MLoRA)."""
    return MLoRA(BACKBONES[cfg.backbone](spec, cfg), spec.domains, cfg.lora.reduce, cfg.lora.targets)


MULTIDOMAIN: dict[str, Builder] = {
    "none": _shared,
    "mlora": _mlora,
}


def build_model(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
    """The model a config names: its backbone, made multi-domain by ``cfg.multidomain``."""
    return MULTIDOMAIN[cfg.multidomain](spec, cfg)
