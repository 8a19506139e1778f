"""Validated configs of the online layer: delayed-feedback experiments and auctions (YAML in,
frozen objects out; an unknown key or a bad value is one InputError line)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mdctr.config import apply_overrides
from mdctr.errors import InputError

Policy = Literal["split", "thompson", "delay_corrected"]
POLICIES: tuple[Policy, ...] = ("split", "thompson", "delay_corrected")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DelayConfig(_Frozen):
    """Time from exposure to conversion, in steps: ``exponential`` (mean), ``lognormal`` (mean,
    sigma) or ``pareto`` (Lomax: scale, shape; heavy-tailed, its mean is scale / (shape - 1))."""

    kind: Literal["exponential", "lognormal", "pareto"] = "exponential"
    mean: float | None = Field(None, gt=0)
    sigma: float = Field(1.0, gt=0)
    scale: float | None = Field(None, gt=0)
    shape: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _parameters(self) -> DelayConfig:
        if self.kind == "pareto":
            if self.scale is None or self.shape is None:
                raise ValueError("a pareto delay needs scale and shape")
            if self.shape <= 1:
                raise ValueError(
                    f"a pareto delay with shape {self.shape:g} has no mean; use shape > 1 "
                    f"(still heavy-tailed, with a finite mean)"
                )
        elif self.mean is None:
            raise ValueError(f"a {self.kind} delay needs its mean (in steps)")
        return self

    @property
    def expected(self) -> float:
        """The mean delay in steps."""
        if self.kind == "pareto":
            return self.scale / (self.shape - 1)  # type: ignore[operator]
        return float(self.mean)  # type: ignore[arg-type]


class ExperimentConfig(_Frozen):
    """An adaptive experiment with delayed binary feedback, simulated over ``seeds`` seeds."""

    name: str = "experiment"
    arms: tuple[float, ...] = Field(..., min_length=2, description="true conversion probability per arm")
    delay: DelayConfig
    users_per_step: int = Field(200, ge=1)
    steps: int = Field(336, ge=2, description="horizon in steps (e.g. hours)")
    check_every: int = Field(24, ge=1, description="steps between stopping checks")
    min_steps: int = Field(24, ge=1, description="no decision before this step")
    stopping: Literal["posterior", "horizon"] = Field(
        "posterior", description="stop when an arm is best with probability >= threshold, or at the horizon"
    )
    threshold: float = Field(0.95, gt=0.5, lt=1)
    policies: tuple[Policy, ...] = POLICIES
    delay_model: Literal["exponential", "nonparametric"] = Field(
        "exponential", description="the delay distribution delay_corrected estimates"
    )
    em_iterations: int = Field(20, ge=1, description="EM iterations per estimate (twice for nonparametric)")
    draws: int = Field(1000, ge=100, description="posterior draws per step for allocation and P(best)")
    seeds: int = Field(20, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _arms(self) -> ExperimentConfig:
        if any(not 0 < p < 1 for p in self.arms):
            raise ValueError("arms: every conversion probability must lie strictly between 0 and 1")
        if sorted(self.arms)[-1] == sorted(self.arms)[-2]:
            raise ValueError("arms: the best conversion probability must be unique, or no decision is right")
        if self.min_steps > self.steps:
            raise ValueError(f"min_steps {self.min_steps} exceeds the horizon of {self.steps} steps")
        if len(set(self.policies)) != len(self.policies):
            raise ValueError("policies: each policy at most once")
        return self


class BidderConfig(_Frozen):
    """How the simulated auctions draw candidates' bids and organic values."""

    ads: int = Field(5, ge=1, description="sponsored candidates per auction")
    organic: int = Field(5, ge=0, description="organic candidates per auction")
    bid_mean: float = Field(1.0, gt=0, description="mean value per click of an advertiser")
    bid_sigma: float = Field(0.5, ge=0, description="lognormal sigma of values per click")
    organic_value: float = Field(0.5, ge=0, description="platform value per organic click, mean")
    categories: int = Field(4, ge=1)


class CandidatesConfig(_Frozen):
    """A real candidate set scored by an mdctr run: each auction pairs one row's user with
    the items of other rows."""

    table: str = Field(..., description="parquet/CSV table with the run's columns, or a task name")
    items: tuple[str, ...] = Field(..., min_length=1, description="the columns that describe an item")
    category: str = Field(..., description="an item column whose value (a list's first) is the category")

    @model_validator(mode="after")
    def _category(self) -> CandidatesConfig:
        if self.category not in self.items:
            raise ValueError(f"category {self.category!r} must be one of items {list(self.items)}")
        return self


class LearnedConfig(_Frozen):
    """The EdgeNet learned auction: network size and training on simulated auctions."""

    dim: int = Field(32, ge=4)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    steps: int = Field(400, ge=1, description="training steps, each on a fresh batch of auctions")
    batch: int = Field(1024, ge=16)
    lr: float = Field(3e-3, gt=0)
    temperature: float = Field(0.1, gt=0, description="softmax temperature of the relaxed decoder")
    welfare_weight: float = Field(0.0, ge=0, description="maximise revenue + this * blended objective")
    validation: int = Field(2000, ge=1, description="simulated auctions that pick the best checkpoint")
    eval_every: int = Field(25, ge=1, description="training steps between validations")

    @model_validator(mode="after")
    def _heads(self) -> LearnedConfig:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not a multiple of heads {self.heads}")
        return self


class AuctionConfig(_Frozen):
    """A page of ``slots`` filled from ads and organic items; GSP, VCG and the learned auction."""

    name: str = "auction"
    slots: int = Field(3, ge=1)
    position: tuple[float, ...] | None = Field(
        None, description="click factor per slot (default 1, 0.7, 0.5, ...)"
    )
    externality: float = Field(
        0.3, ge=0, lt=1, description="each other item of the same category on the page cuts a CTR by this"
    )
    virtual_bid: float = Field(1.0, ge=0, description="platform weight on organic value (virtual bids)")
    bidders: BidderConfig = BidderConfig()
    learned: LearnedConfig = LearnedConfig()
    run: str | None = Field(None, description="an mdctr run whose pCTR is the candidates' CTR")
    candidates: CandidatesConfig | None = Field(None, description="what the run scores (needs run)")
    auctions: int = Field(2000, ge=1)
    ic_auctions: int = Field(200, ge=1, description="auctions searched for profitable misreports")
    ic_grid: int = Field(41, ge=3, description="misreports tried per bidder")
    seed: int = 0

    @model_validator(mode="after")
    def _page(self) -> AuctionConfig:
        if (self.run is None) != (self.candidates is None):
            raise ValueError("run and candidates go together: a run scores the candidates")
        n = self.bidders.ads + self.bidders.organic
        if self.slots > n:
            raise ValueError(
                f"slots {self.slots} exceed the {n} candidates per auction; lower slots or add candidates"
            )
        if self.position is not None:
            if len(self.position) != self.slots:
                raise ValueError(f"position: {len(self.position)} factors for {self.slots} slots")
            if any(p <= 0 for p in self.position):
                raise ValueError("position: every click factor must be positive")
            if any(b > a for a, b in itertools.pairwise(self.position)):
                raise ValueError("position: click factors may not increase down the page")
        return self

    @property
    def factors(self) -> tuple[float, ...]:
        """Click factor per slot."""
        return self.position or tuple(0.7**k for k in range(self.slots))


M = TypeVar("M", bound=BaseModel)


def load(kind: type[M], path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> M:
    """Read a YAML config of ``kind``, apply ``--set`` overrides, validate: one InputError line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} not found; pass the path of a YAML file")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise InputError(f"{path}: not valid YAML; fix the syntax") from None
    if not isinstance(tree, dict):
        raise InputError(f"{path}: expected a mapping of keys")
    return parse(kind, apply_overrides(tree, overrides), str(path))


def parse(kind: type[M], tree: dict[str, Any], where: str = "config") -> M:
    """Validate a mapping as ``kind``; the first problem becomes one InputError line."""
    try:
        return kind.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise InputError(f"{where}: unknown key {loc!r}") from None
        msg = first["msg"].removeprefix("Value error, ")
        raise InputError(f"{where}: {loc}: {msg}" if loc else f"{where}: {msg}") from None
