"""The input contract: which columns are features (categorical, numeric, sequence), which
vocabulary each id feature uses, the domain, the labels (one per task) and the columns used
only for evaluation (user, oracle); to and from JSON. ``InputSpec`` is what a model sees of it
once the vocabularies are fitted: table sizes, sharing, lengths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FeatureKind = Literal["categorical", "numeric", "sequence"]


class Feature(BaseModel):
    """One input column: ``categorical`` (ids), ``numeric`` (scaled float) or ``sequence`` (a list
    of ids). ``vocab`` names another id feature whose vocabulary and embedding table this one
    shares (e.g. a history of item ids and ``item_id``); the owner's ``min_count`` and
    ``max_vocab`` then apply to the values of both."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    kind: FeatureKind = "categorical"
    min_count: int = Field(1, ge=1, description="rarer values map to the out-of-vocabulary id")
    max_vocab: int | None = Field(
        None, ge=1, description="keep at most this many values, the most frequent; the rest -> OOV"
    )
    max_len: int = Field(8, ge=1, description="sequence: keep the first max_len items")
    sep: str = Field("|", min_length=1, description="sequence stored as text: item separator")
    log1p: bool = Field(False, description="numeric: scale log(1 + max(x, 0)) instead of x")
    vocab: str | None = Field(None, description="share the vocabulary of this feature")

    @property
    def vocabulary(self) -> str:
        """The name of the vocabulary this feature's ids come from."""
        return self.vocab or self.name


class Schema(BaseModel):
    """The columns of a click log and their roles. ``labels`` holds one 0/1 column per task, the
    first being the main task; ``domain`` one or several columns whose joined values name the
    domain; ``user`` groups rows for GAUC; ``oracle`` holds a true click probability (synthetic
    data), reported as the oracle AUC."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    features: tuple[Feature, ...] = Field(min_length=1)
    domain: tuple[str, ...] = Field(min_length=1)
    labels: tuple[str, ...] = Field(min_length=1)
    user: str | None = None
    oracle: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Schema:
        names = [f.name for f in self.features]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"feature {twice[0]!r} is declared twice; declare each column once")
        repeated = sorted({c for c in self.labels if self.labels.count(c) > 1})
        if repeated:
            raise ValueError(f"label {repeated[0]!r} is listed twice")
        clash = next((c for c in self.labels if c in names), None)
        if clash is not None:
            raise ValueError(f"column {clash!r} is both a feature and a label; drop it from features")
        clash = next((c for c in self.labels if c in self.domain), None)
        if clash is not None:
            raise ValueError(f"column {clash!r} is both the label and the domain")
        kinds = {f.name: f.kind for f in self.features}
        owners = {f.name: f.vocab for f in self.features}
        for f in self.features:
            if f.vocab is None:
                continue
            if f.kind == "numeric":
                raise ValueError(f"feature {f.name!r} is numeric and has no vocabulary to share")
            if f.vocab not in kinds or kinds[f.vocab] == "numeric":
                raise ValueError(
                    f"feature {f.name!r}: vocab {f.vocab!r} is not a categorical or sequence feature"
                )
            if owners[f.vocab] is not None:
                raise ValueError(
                    f"feature {f.name!r}: vocab {f.vocab!r} shares another vocabulary itself; "
                    f"point at {owners[f.vocab]!r}"
                )
        return self

    def of_kind(self, kind: FeatureKind) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.kind == kind)

    @property
    def categorical(self) -> tuple[Feature, ...]:
        return self.of_kind("categorical")

    @property
    def sequence(self) -> tuple[Feature, ...]:
        return self.of_kind("sequence")

    @property
    def numeric(self) -> tuple[Feature, ...]:
        return self.of_kind("numeric")

    @property
    def label(self) -> str:
        """The main task's label column."""
        return self.labels[0]

    def feature(self, name: str) -> Feature:
        return next(f for f in self.features if f.name == name)

    def vocabularies(self) -> dict[str, tuple[Feature, ...]]:
        """Vocabulary name -> the id features drawing on it (the owner first), in feature order."""
        found: dict[str, list[Feature]] = {}
        for f in self.features:
            if f.kind != "numeric" and f.vocab is None:
                found[f.name] = [f]
        for f in self.features:
            if f.vocab is not None:
                found[f.vocab].append(f)
        return {name: tuple(users) for name, users in found.items()}

    @property
    def id_columns(self) -> tuple[str, ...]:
        """Columns whose values are ids (read from CSV as text: a zip code "07030" stays itself)."""
        ids = [f.name for f in self.features if f.kind != "numeric"]
        return tuple(dict.fromkeys([*ids, *self.domain, *([self.user] if self.user else [])]))

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the schema reads, once each."""
        extra = [c for c in (self.user, self.oracle) if c is not None]
        return tuple(dict.fromkeys([*self.labels, *self.domain, *(f.name for f in self.features), *extra]))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        return cls.model_validate(data)


@dataclass(frozen=True)
class InputSpec:
    """What a model sees of the encoded input.

    ``categorical`` / ``sequence``: embedding-table rows per feature (PAD, OOV and the kept
    values); ``numeric``: the number of numeric features; ``domains``: known domains (id D is
    the unseen one); ``tasks``: labels per row. ``owner`` says which table each id feature reads,
    indexing categorical features first, then sequence features: ``owner[i] == i`` is a table of
    its own, anything else the table of feature ``owner[i]`` (empty = every feature its own).
    ``max_len``: the padded length of each sequence feature.
    """

    categorical: tuple[int, ...]
    sequence: tuple[int, ...]
    numeric: int
    domains: int
    tasks: int = 1
    owner: tuple[int, ...] = ()
    max_len: tuple[int, ...] = ()

    def fields(self, domain_as_feature: bool) -> int:
        return len(self.categorical) + len(self.sequence) + self.numeric + int(domain_as_feature)

    def table_of(self, index: int) -> int:
        """The id feature (categorical first, then sequence) whose table feature ``index`` reads."""
        return self.owner[index] if self.owner else index
