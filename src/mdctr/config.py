"""Experiment files: YAML in, validated frozen objects out, with ``a.b=value`` overrides."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mdctr.data.schema import Feature, Schema
from mdctr.errors import InputError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SplitConfig(_Frozen):
    """Random split, stratified by label within each domain."""

    valid: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    seed: int = 2024

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.valid + self.test >= 1:
            raise ValueError("split.valid + split.test must be below 1")
        return self


class DataConfig(_Frozen):
    """A benchmark task (``task``) or a user table (``path`` + ``label`` + ``domain`` + features)."""

    task: str | None = None
    rows: int | None = Field(None, ge=100, description="synthetic task: number of rows")
    path: str | None = None
    valid_path: str | None = None
    test_path: str | None = None
    label: str | tuple[str, ...] | None = Field(None, description="0/1 column, or one per task")
    domain: str | tuple[str, ...] | None = None
    user: str | None = Field(None, description="column whose values group rows for GAUC")
    oracle: str | None = Field(None, description="column with the true click probability (synthetic)")
    features: tuple[Feature, ...] = ()
    split: SplitConfig = SplitConfig()
    streaming: bool | Literal["auto"] = Field(
        "auto",
        description="read the parquet files row group by row group instead of into memory; auto: when "
        "the training files decode to more than memory_budget_mb (needs valid_path and test_path)",
    )
    memory_budget_mb: int = Field(
        2048, ge=1, description="auto streaming: largest training data held in memory"
    )
    shuffle_buffer: int = Field(262_144, ge=1, description="streaming: rows shuffled together (a window)")
    keep: str | None = Field(
        None, description="selected_features.json of an OptFS search: other categorical values -> OOV"
    )

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str | None) -> str | None:
        from mdctr.data.tasks import TASKS

        if value is not None and value not in TASKS:
            raise ValueError(f"unknown data.task {value!r}; choose one of: {', '.join(TASKS)}")
        return value

    @model_validator(mode="after")
    def _source(self) -> DataConfig:
        if (self.task is None) == (self.path is None):
            raise ValueError("give exactly one of data.task or data.path")
        if self.path is not None:
            missing = [k for k in ("label", "domain") if getattr(self, k) is None]
            if missing or not self.features:
                need = ", ".join(f"data.{k}" for k in [*missing, *([] if self.features else ["features"])])
                raise ValueError(f"a data.path table also needs {need}")
        if (self.valid_path is None) != (self.test_path is None):
            raise ValueError("give both data.valid_path and data.test_path, or neither")
        if self.path is not None:
            self.schema()  # its column rules (no column twice, ...) are the config's
        return self

    def schema(self) -> Schema:
        """The schema a user table's columns declare (``path`` given)."""
        assert self.label is not None and self.domain is not None
        try:
            return Schema(
                features=self.features,
                domain=(self.domain,) if isinstance(self.domain, str) else tuple(self.domain),
                labels=(self.label,) if isinstance(self.label, str) else tuple(self.label),
                user=self.user,
                oracle=self.oracle,
            )
        except ValidationError as err:
            raise ValueError(err.errors()[0]["msg"].removeprefix("Value error, ")) from None


class LoRAConfig(_Frozen):
    """MLoRA adapters: rank ``max(units // reduce, 1)`` on every dense layer matching ``targets``."""

    reduce: int = Field(16, ge=1)
    targets: tuple[str, ...] = Field(("*mlp.layers.*.linear",), min_length=1)


class EmbeddingConfig(_Frozen):
    """How categorical values find their vectors: one table per feature, hashed buckets per
    feature, or one table shared by all features (Unified Embedding / feature multiplexing)."""

    kind: Literal["table", "hashed", "unified"] = "table"
    buckets: int = Field(0, ge=0, description="hashed: rows per feature; unified: rows of the shared table")
    chunks: int = Field(1, ge=1, description="unified: chunks per feature, each from its own hash")

    @model_validator(mode="after")
    def _sizes(self) -> EmbeddingConfig:
        if self.kind != "table" and self.buckets < 1:
            raise ValueError(f"model.embedding.kind {self.kind!r} needs model.embedding.buckets >= 1")
        return self


class OptFSConfig(_Frozen):
    """OptFS feature-set search: a learnable gate per categorical value, driven to 0/1 by a
    temperature that grows each epoch (learning by continuation) under an L1 penalty."""

    search: bool = False
    l1: float = Field(1e-3, ge=0, description="weight of the mean gate value in the loss")
    init: float = Field(0.05, description="initial gate logit (gate = sigmoid(temperature * logit))")
    final_temperature: float = Field(100.0, ge=1, description="temperature of the last epoch (first: 1)")


class CrossConfig(_Frozen):
    """DCNv2's cross network: ``layers`` cross layers, full rank or a mixture of low-rank experts."""

    layers: int = Field(3, ge=1)
    structure: Literal["stacked", "parallel"] = Field(
        "parallel", description="stacked: cross then MLP; parallel: cross and MLP side by side"
    )
    rank: int | None = Field(
        None, ge=1, description="low-rank cross layers (DCN-Mix) of this rank; None = full"
    )
    experts: int = Field(1, ge=1, description="low-rank experts mixed by a gate (with rank)")


class AttentionConfig(_Frozen):
    """AutoInt's interacting layers: multi-head self-attention over the field embeddings."""

    layers: int = Field(3, ge=1)
    heads: int = Field(2, ge=1)
    dim: int = Field(16, ge=1, description="attention size per head")
    residual: bool = True
    rank: int = Field(32, ge=1, description="hiformer: rank of the composite key/value projections")


class FGCNNConfig(_Frozen):
    """FGCNN's feature generation: per conv layer its channels, kernel height, pooling and new fields."""

    channels: tuple[int, ...] = (14, 16, 18, 20)
    kernel_heights: tuple[int, ...] = (7, 7, 7, 7)
    pooling: tuple[int, ...] = (2, 2, 2, 2)
    recombined: tuple[int, ...] = (3, 3, 3, 3)

    @model_validator(mode="after")
    def _same_lengths(self) -> FGCNNConfig:
        if not len(self.channels) == len(self.kernel_heights) == len(self.pooling) == len(self.recombined):
            raise ValueError(
                "model.fgcnn: channels, kernel_heights, pooling and recombined need one entry per layer"
            )
        return self


class MMoEConfig(_Frozen):
    """MMoE (and DADNN's MMoE bottom): experts mixed by a softmax gate per domain."""

    experts: int = Field(4, ge=1)


class PLEConfig(_Frozen):
    """PLE: shared and per-domain experts per extraction level."""

    shared_experts: int = Field(2, ge=1, description="shared experts per level")
    domain_experts: int = Field(1, ge=1, description="experts per domain per level")
    levels: int = Field(1, ge=1, description="extraction levels (1 = CGC)")


class DADNNConfig(_Frozen):
    """DADNN: the shared bottom and the weight of the distillation between domain heads."""

    bottom: Literal["mlp", "mmoe"] = Field("mlp", description="the backbone's network, or an MMoE of them")
    transfer_weight: float = Field(0.1, ge=0)


class ModelConfig(_Frozen):
    """The network: a backbone, an optional multi-domain method and their sizes."""

    backbone: str = "dnn"
    multidomain: str = "none"
    embedding_dim: int = Field(16, ge=1)
    hidden: tuple[int, ...] = (256, 128, 64)
    dropout: float = Field(0.2, ge=0, lt=1)
    batch_norm: bool = False
    input_norm: bool = Field(False, description="dnn/deepfm: batch norm over the MLP's input embeddings")
    domain_as_feature: bool = True
    embedding_init_std: float = Field(1e-4, gt=0)
    dense_init: Literal["xavier_normal", "torch"] = Field(
        "xavier_normal",
        description="every nn.Linear: xavier_normal (weights N(0, 2 / (in + out)), bias 0) or torch's "
        "default (uniform +-1/sqrt(in)); the latter converges slower from 1e-4 embeddings",
    )
    embedding: EmbeddingConfig = EmbeddingConfig()
    optfs: OptFSConfig = OptFSConfig()
    lora: LoRAConfig = LoRAConfig()
    cross: CrossConfig = CrossConfig()
    attention: AttentionConfig = AttentionConfig()
    fgcnn: FGCNNConfig = FGCNNConfig()
    mmoe: MMoEConfig = MMoEConfig()
    ple: PLEConfig = PLEConfig()
    dadnn: DADNNConfig = DADNNConfig()
    tower: tuple[int, ...] = Field((64,), description="per-domain tower MLP of the multi-domain models")
    transfer: Literal["none", "ctnet"] = Field(
        "none",
        description="ctnet: the model above as a target tower beside a frozen copy from a source run "
        "(--source), joined by adapters (continual transfer)",
    )

    @model_validator(mode="after")
    def _gates_need_tables(self) -> ModelConfig:
        if self.optfs.search and self.embedding.kind != "table":
            raise ValueError("model.optfs.search needs model.embedding.kind: table")
        return self

    @model_validator(mode="after")
    def _chunks_divide_dim(self) -> ModelConfig:
        if self.embedding.kind == "unified" and self.embedding_dim % self.embedding.chunks:
            raise ValueError(
                f"model.embedding.chunks {self.embedding.chunks} must divide model.embedding_dim {self.embedding_dim}"
            )
        return self

    @model_validator(mode="after")
    def _method_takes_the_backbone(self) -> ModelConfig:
        from mdctr.registry import BACKBONES, FAMILY, NO_NETWORK, OWN_NETWORK

        if self.multidomain in OWN_NETWORK and self.backbone != "dnn":
            raise ValueError(
                f"model.multidomain {self.multidomain!r} builds its own MLP network and cannot use "
                f"model.backbone {self.backbone!r}; set model.backbone: dnn, or make {self.backbone!r} "
                "multi-domain with mlora, modula, modula_res, separate, shared_bottom, mmoe, ple or dadnn"
            )
        if self.multidomain in FAMILY and self.backbone in NO_NETWORK:
            raise ValueError(
                f"model.backbone {self.backbone!r} has no hidden network for model.multidomain "
                f"{self.multidomain!r} to share; use a deep backbone "
                f"({', '.join(b for b in BACKBONES if b not in NO_NETWORK)}) or model.multidomain: separate"
            )
        return self

    @field_validator("backbone", "multidomain")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        from mdctr.registry import BACKBONES, MULTIDOMAIN

        names = BACKBONES if info.field_name == "backbone" else MULTIDOMAIN
        if value not in names:
            raise ValueError(
                f"unknown model.{info.field_name} {value!r}; choose one of: {', '.join(sorted(names))}"
            )
        return value


class AdapterTrainConfig(_Frozen):
    """Settings for adapter parameters (joint) and the adapter stage (two_stage); unset = as train."""

    epochs: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int | None = Field(None, ge=1)
    tables: bool = Field(
        False, description="recipe adapters: the embedding tables learn too (new ids get trained rows)"
    )


class SparseConfig(_Frozen):
    """Embedding tables of at least ``min_rows`` rows learn from sparse gradients (only the
    batch's rows) with a row-wise optimizer instead of dense Adam over the whole table."""

    min_rows: int | None = Field(1_000_000, ge=1, description="tables this large are sparse; null: none")
    optimizer: Literal["rowwise_adagrad", "sparse_adam"] = "rowwise_adagrad"
    lr: float | None = Field(None, gt=0, description="their learning rate; default train.lr")


class TrainConfig(_Frozen):
    """The optimisation: Adam, early stopping on validation AUC, best weights restored."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(1024, ge=1)
    eval_batch_size: int = Field(16384, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(2, ge=1)
    seed: int = 2024
    recipe: Literal["joint", "two_stage", "adapters"] = Field(
        "joint",
        description="joint: every parameter; two_stage: the model's stages in order (MLoRA: shared, then "
        "adapters); adapters: the adapters alone, as they are (an update of an adapted run)",
    )
    adapter: AdapterTrainConfig = AdapterTrainConfig()
    sparse: SparseConfig = SparseConfig()
    keep_parent: bool = Field(
        True,
        description="an update (--init): the parent's weights count as epoch 0, kept when no epoch beats "
        "them on the validation rows",
    )
    threads: int | None = Field(None, ge=1, description="torch threads; default: all cores")
    checkpoint_every: int | None = Field(
        None, ge=1, description="also checkpoint every this many steps (mid-epoch resume); default: per epoch"
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="bf16: the training forward pass under bfloat16 autocast (matmuls in bf16); "
        "weights, optimizer state, loss and evaluation stay float32",
    )


class Experiment(_Frozen):
    """A whole experiment file."""

    name: str = Field(min_length=1)
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise InputError(f"--set {dotted}: {key!r} is not a section; use a key below a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (value parsed as YAML) to a raw config mapping."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {item!r}: expected key=value, e.g. --set train.epochs=3")
        _set_path(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else raw)
    return tree


def _explain(err: ValidationError, where: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        parent_loc, key = first["loc"][:-1], str(first["loc"][-1])
        parent: type[BaseModel] = Experiment
        for part in parent_loc:
            if isinstance(part, int):
                continue
            annotation = parent.model_fields[str(part)].annotation
            args = getattr(annotation, "__args__", ())
            candidates = [annotation, *args]
            parent = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), parent)
        close = difflib.get_close_matches(key, list(parent.model_fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(parent.model_fields)}"
        return f"{where}: unknown key {loc!r}{hint}"
    msg = first["msg"].removeprefix("Value error, ")
    return f"{where}: {loc}: {msg}" if loc else f"{where}: {msg}"


def data_section(schema: Schema) -> dict[str, Any]:
    """The ``data`` keys that declare a table's columns as ``schema`` reads them."""
    return {
        "label": schema.label if len(schema.labels) == 1 else list(schema.labels),
        "domain": schema.domain[0] if len(schema.domain) == 1 else list(schema.domain),
        "user": schema.user,
        "oracle": schema.oracle,
        "features": [f.model_dump(mode="json", exclude_defaults=True) for f in schema.features],
    }


def update_experiment(
    parent: Experiment,
    schema: Schema,
    data: str | Path,
    valid: str | Path | None = None,
    test: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Experiment:
    """The experiment of an update: the parent's, reading ``data`` (split as the parent's
    ``data.split`` says, or ``valid`` and ``test``) with the parent's columns."""
    tree = parent.to_dict()
    tree["name"] = f"{parent.name}+{Path(data).stem}"
    tree["data"] |= {
        "task": None,
        "rows": None,
        "path": str(data),
        "valid_path": None if valid is None else str(valid),
        "test_path": None if test is None else str(test),
        **data_section(schema),
    }
    return parse_experiment(apply_overrides(tree, overrides), where=f"the update of {parent.name}")


def parse_experiment(tree: dict[str, Any], where: str = "config") -> Experiment:
    """Validate a raw mapping; any problem becomes one InputError line."""
    try:
        return Experiment.model_validate(tree)
    except ValidationError as err:
        raise InputError(_explain(err, where)) from None


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Experiment:
    """Read a YAML experiment file, apply ``--set`` overrides and validate."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} not found; pass the path of a YAML experiment file")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{path}: not valid YAML{line}; fix the syntax") from None
    if not isinstance(tree, dict):
        raise InputError(f"{path}: expected a mapping with name, data, model, train")
    return parse_experiment(apply_overrides(tree, overrides), where=str(path))
