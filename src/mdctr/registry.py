"""The one bridge from an experiment's ``model`` section to the models' typed constructors:
names -> builder functions (explicit dicts, nothing imported by name)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mdctr.config import ModelConfig
from mdctr.data.schema import InputSpec
from mdctr.errors import InputError
from mdctr.models.autoint import AutoInt
from mdctr.models.common import BodyMaker, Experts, MixtureOfExperts
from mdctr.models.ctnet import CTNet
from mdctr.models.dadnn import DADNN
from mdctr.models.dcnv2 import DCNv2
from mdctr.models.deepfm import DeepFM
from mdctr.models.dnn import DNN
from mdctr.models.fgcnn import FGCNN
from mdctr.models.hiformer import Hiformer
from mdctr.models.linear import FM, LR, FirstOrder, WideDeep
from mdctr.models.mlora import MLoRA
from mdctr.models.mmoe import MMoE
from mdctr.models.modula import MoDULA
from mdctr.models.pepnet import PEPNet
from mdctr.models.ple import PLE, ExtractionLevel
from mdctr.models.separate import Separate
from mdctr.models.shared_bottom import SharedBottom
from mdctr.models.star import STAR
from mdctr.nn.embedding import FeatureGate, FieldEmbedding, fused_rows
from mdctr.nn.mlp import GroupedMLP, MLPLayers


def embedding(
    spec: InputSpec, cfg: ModelConfig, first_order: bool = False, domain_as_feature: bool | None = None
) -> FieldEmbedding:
    """The field embedding a model config describes (``embedding_dim``, ``embedding.kind``,
    OptFS gates); ``first_order``: one weight per value instead (unchunked, ungated)."""
    e, search = cfg.embedding, cfg.optfs
    gate = None
    if search.search and not first_order:
        gate = FeatureGate(max(fused_rows(spec), 1), search.init, search.l1, search.final_temperature)
    return FieldEmbedding(
        spec,
        1 if first_order else cfg.embedding_dim,
        cfg.embedding_init_std,
        cfg.domain_as_feature if domain_as_feature is None else domain_as_feature,
        e.kind,
        e.buckets,
        1 if first_order else e.chunks,
        gate,
    )


def mlp_layers(cfg: ModelConfig) -> MLPLayers:
    return MLPLayers(cfg.hidden, cfg.dropout, cfg.batch_norm, cfg.input_norm)


BackboneBuilder = Callable[[InputSpec, ModelConfig, bool], nn.Module]
"""(spec, config, body_only) -> the backbone; ``body_only``: without embedding and head, as the
bottom or an expert of a multi-domain model."""


def _input(spec: InputSpec, cfg: ModelConfig, body_only: bool) -> tuple[FieldEmbedding | None, int, int]:
    """A backbone's first arguments: its embedding (none for a body), the fields and their size."""
    own = None if body_only else embedding(spec, cfg)
    return own, spec.fields(cfg.domain_as_feature), cfg.embedding_dim


def _first_order(spec: InputSpec, cfg: ModelConfig) -> FirstOrder:
    return FirstOrder(embedding(spec, cfg, first_order=True))


def _dnn(spec: InputSpec, cfg: ModelConfig, body_only: bool = False) -> nn.Module:
    return DNN(*_input(spec, cfg, body_only), mlp_layers(cfg), spec.tasks)


def _wide(make: type[WideDeep]) -> BackboneBuilder:
    """Wide & Deep or DeepFM: an MLP and a first-order part."""

    def build(spec: InputSpec, cfg: ModelConfig, body_only: bool = False) -> nn.Module:
        base = _input(spec, cfg, body_only)
        return make(*base, mlp_layers(cfg), _first_order(spec, cfg), spec.tasks)

    return build


def _dcnv2(spec: InputSpec, cfg: ModelConfig, body_only: bool = False) -> nn.Module:
    c, base = cfg.cross, _input(spec, cfg, body_only)
    return DCNv2(*base, mlp_layers(cfg), c.layers, c.structure == "parallel", c.rank, c.experts, spec.tasks)


def _autoint(with_mlp: bool) -> BackboneBuilder:
    def build(spec: InputSpec, cfg: ModelConfig, body_only: bool = False) -> nn.Module:
        a, base = cfg.attention, _input(spec, cfg, body_only)
        mlp = mlp_layers(cfg) if with_mlp else None
        return AutoInt(*base, a.layers, a.heads, a.dim, a.residual, mlp, spec.tasks)

    return build


def _hiformer(spec: InputSpec, cfg: ModelConfig, body_only: bool = False) -> nn.Module:
    a, base = cfg.attention, _input(spec, cfg, body_only)
    return Hiformer(*base, a.layers, a.heads, a.dim, a.rank, spec.tasks)


def _fgcnn(spec: InputSpec, cfg: ModelConfig, body_only: bool = False) -> nn.Module:
    g, base = cfg.fgcnn, _input(spec, cfg, body_only)
    return FGCNN(*base, mlp_layers(cfg), g.channels, g.kernel_heights, g.pooling, g.recombined, spec.tasks)


BACKBONES: dict[str, BackboneBuilder] = {
    "lr": lambda spec, cfg, body_only=False: LR(_first_order(spec, cfg)),
    "fm": lambda spec, cfg, body_only=False: FM(_first_order(spec, cfg), embedding(spec, cfg)),
    "dnn": _dnn,
    "wdl": _wide(WideDeep),
    "deepfm": _wide(DeepFM),
    "dcnv2": _dcnv2,
    "autoint": _autoint(with_mlp=False),
    "autoint_plus": _autoint(with_mlp=True),
    "fgcnn": _fgcnn,
    "hiformer": _hiformer,
}

Builder = Callable[[InputSpec, ModelConfig], nn.Module]


def _body(spec: InputSpec, cfg: ModelConfig) -> BodyMaker:
    """Builds the backbone's network without its embedding (the family model embeds once) and
    without its logit layer (the family's towers make the logits)."""
    return lambda: BACKBONES[cfg.backbone](spec, cfg, True)


def _experts(spec: InputSpec, cfg: ModelConfig, groups: int, width: int) -> Experts:
    """``groups`` copies of the backbone's network; DNN's run batched as one GroupedMLP."""
    if cfg.backbone == "dnn":
        return Experts(grouped=GroupedMLP(width, cfg.hidden, groups, cfg.dropout))
    make = _body(spec, cfg)
    return Experts([make() for _ in range(groups)])


def _mixture(spec: InputSpec, cfg: ModelConfig, width: int) -> MixtureOfExperts:
    return MixtureOfExperts(_experts(spec, cfg, cfg.mmoe.experts, width), width, spec.domains)


def _mmoe(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
    own = embedding(spec, cfg)
    return MMoE(own, _mixture(spec, cfg, own.num_fields * cfg.embedding_dim), cfg.tower, cfg.dropout)


def _ple(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
    own, p, domains = embedding(spec, cfg), cfg.ple, spec.domains
    width, levels, groups = (
        own.num_fields * cfg.embedding_dim,
        [],
        p.shared_experts + domains * p.domain_experts,
    )
    for i in range(p.levels):
        experts = (
            _experts(spec, cfg, groups, width)
            if i == 0
            else GroupedMLP(width, cfg.hidden, groups, cfg.dropout)
        )
        levels.append(
            ExtractionLevel(experts, width, p.shared_experts, p.domain_experts, domains, i == p.levels - 1)
        )
        width = levels[-1].out_features
    return PLE(own, levels, domains, cfg.tower, cfg.dropout)


def _dadnn(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
    own = embedding(spec, cfg)
    mixture = cfg.dadnn.bottom == "mmoe"
    bottom = _mixture(spec, cfg, own.num_fields * cfg.embedding_dim) if mixture else _body(spec, cfg)()
    return DADNN(own, bottom, spec.domains, cfg.tower, cfg.dropout, cfg.dadnn.transfer_weight)


def _shared_bottom(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
    own = embedding(spec, cfg)
    return SharedBottom(own, _body(spec, cfg)(), spec.domains, cfg.tower, cfg.dropout)


def _modula(residual: bool) -> Builder:
    def build(spec: InputSpec, cfg: ModelConfig) -> nn.Module:
        """The backbone with a universal and per-domain LoRA experts (MoDULA)."""
        backbone = BACKBONES[cfg.backbone](spec, cfg, False)
        return MoDULA(backbone, spec.domains, cfg.lora.reduce, cfg.lora.targets, residual)

    return build


MULTIDOMAIN: dict[str, Builder] = {
    "none": lambda spec, cfg: BACKBONES[cfg.backbone](spec, cfg, False),
    "separate": lambda spec, cfg: Separate(lambda: BACKBONES[cfg.backbone](spec, cfg, False), spec.domains),
    "mlora": lambda spec, cfg: MLoRA(
        BACKBONES[cfg.backbone](spec, cfg, False), spec.domains, cfg.lora.reduce, cfg.lora.targets
    ),
    "modula": _modula(residual=False),
    "modula_res": _modula(residual=True),
    "shared_bottom": _shared_bottom,
    "mmoe": _mmoe,
    "ple": _ple,
    "star": lambda spec, cfg: STAR(
        embedding(spec, cfg), cfg.embedding_dim, cfg.hidden, cfg.dropout, spec.domains, cfg.tower
    ),
    "pepnet": lambda spec, cfg: PEPNet(
        embedding(spec, cfg, domain_as_feature=False), cfg.embedding_dim, mlp_layers(cfg), spec.domains
    ),
    "dadnn": _dadnn,
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
    dense layers initialised as ``cfg.dense_init`` says; with ``transfer: ctnet``, that model as
    the target tower of a CTNet beside a source tower of the same shape."""
    if spec.tasks > 1 and (cfg.multidomain != "none" or cfg.backbone in NO_NETWORK):
        raise InputError(
            f"the data has {spec.tasks} labels, and model.multidomain {cfg.multidomain!r} with "
            f"model.backbone {cfg.backbone!r} predicts one; give one data.label, or train a deep "
            "backbone with model.multidomain: none (one head per task over a shared network)"
        )

    def initialised(model: nn.Module) -> nn.Module:
        if cfg.dense_init == "xavier_normal":
            for module in model.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_normal_(module.weight)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
        return model

    model = initialised(MULTIDOMAIN[cfg.multidomain](spec, cfg))
    if cfg.transfer == "ctnet":  # the target tower is the model above; its adapters start at zero
        return CTNet(initialised(MULTIDOMAIN[cfg.multidomain](spec, cfg)), model)
    return model
