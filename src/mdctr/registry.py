"""Model names in the config -> builder functions. An explicit dict, nothing imported by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mdctr.config import ModelConfig
from mdctr.data.schema import InputSpec
from mdctr.errors import InputError
from mdctr.models.autoint import AutoInt, autoint_plus
from mdctr.models.backbone import Backbone
from mdctr.models.common import BodyMaker
from mdctr.models.dadnn import DADNN
from mdctr.models.dcnv2 import DCNv2
from mdctr.models.deepfm import DeepFM
from mdctr.models.dnn import DNN
from mdctr.models.fgcnn import FGCNN
from mdctr.models.hiformer import Hiformer
from mdctr.models.linear import FM, LR, WideDeep
from mdctr.models.mlora import MLoRA
from mdctr.models.mmoe import MMoE
from mdctr.models.modula import MoDULA
from mdctr.models.pepnet import PEPNet
from mdctr.models.ple import PLE
from mdctr.models.separate import Separate
from mdctr.models.shared_bottom import SharedBottom
from mdctr.models.star import STAR

Builder = Callable[[InputSpec, ModelConfig], nn.Module]

BACKBONES: dict[str, Builder] = {
    "lr": LR,
    "fm": FM,
    "dnn": DNN,
    "wdl": WideDeep,
    "deepfm": DeepFM,
    "dcnv2": DCNv2,
    "autoint": AutoInt,
    "autoint_plus": autoint_plus,
    "fgcnn": FGCNN,
    "hiformer": Hiformer,
}


def _shared(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
    """One shared model for all domains (the domain enters as a feature)."""
    return BACKBONES[cfg.backbone](spec, cfg)


def _mlora(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
    """The backbone with per-domain low-rank adapters (MLoRA)."""
    return MLoRA(BACKBONES[cfg.backbone](spec, cfg), spec.domains, cfg.lora.reduce, cfg.lora.targets)


def _modula(residual: bool) -> Builder:
    def build(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
        """The backbone with a universal and per-domain LoRA experts (MoDULA)."""
        backbone = BACKBONES[cfg.backbone](spec, cfg)
        return MoDULA(backbone, spec.domains, cfg.lora.reduce, cfg.lora.targets, residual)

    return build


def _body(spec: InputSpec, cfg: ModelConfig) -> BodyMaker:
    """Builds the backbone's network without its embedding (the family model embeds once) and
    without its logit layer (the family's towers make the logits)."""

    def make() -> Backbone:
        return BACKBONES[cfg.backbone](spec, cfg, body_only=True)

    return make


def _family(model: Callable[[InputSpec, ModelConfig, BodyMaker], nn.Module]) -> Builder:
    def build(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
        return model(spec, cfg, _body(spec, cfg))

    build.__doc__ = model.__doc__
    return build


def _separate(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
    """One backbone per domain, each seeing only its own rows."""
    return Separate(lambda: BACKBONES[cfg.backbone](spec, cfg), spec.domains)


MULTIDOMAIN: dict[str, Builder] = {
    "none": _shared,
    "separate": _separate,
    "mlora": _mlora,
    "modula": _modula(residual=False),
    "modula_res": _modula(residual=True),
    "shared_bottom": _family(SharedBottom),
    "mmoe": _family(MMoE),
    "ple": _family(PLE),
    "star": STAR,
    "pepnet": PEPNet,
    "dadnn": _family(DADNN),
}


OWN_NETWORK = frozenset({"star", "pepnet"})
"""Multi-domain methods whose paper defines the network layer by layer (STAR's star-topology
layers, PEPNet's gated layers): they refuse any backbone but ``dnn``."""

FAMILY = frozenset({"shared_bottom", "mmoe", "ple", "dadnn"})
"""Multi-domain methods that use the backbone's network as their shared bottom or experts."""

NO_NETWORK = frozenset({"lr", "fm"})
"""Backbones without a hidden network a family model could share."""


def build_model(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
    """The model a config names: its backbone, made multi-domain by ``cfg.multidomain``, its
    dense layers initialised as ``cfg.dense_init`` says."""
    if spec.tasks > 1 and (cfg.multidomain != "none" or cfg.backbone in NO_NETWORK):
        raise InputError(
            f"the data has {spec.tasks} labels, and model.multidomain {cfg.multidomain!r} with "
            f"model.backbone {cfg.backbone!r} predicts one; give one data.label, or train a deep "
            "backbone with model.multidomain: none (one head per task over a shared network)"
        )
    model = MULTIDOMAIN[cfg.multidomain](spec, cfg)
    if cfg.dense_init == "xavier_normal":
        for module in model.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    return model
