"""OutRank-style feature ranking: mutual information with the label, corrected for the noise a
feature of the same cardinality produces, plus pairwise redundancy between features.

Every feature becomes integer codes (categorical: one code per value; numeric: quantile bins;
sequence: one code per set of items; missing: a code of its own). A feature's score is
``MI(feature; label) - mean MI(feature; shuffled label)``: the shuffles keep the feature's
cardinality and value distribution, so what they measure is how much MI that cardinality
gets by chance, and high-cardinality noise scores about zero instead of ranking high.
Redundancy of two features is their MI adjusted for chance and scaled to [0, 1] (1 = one
determines the other).
All counting is vectorised (numpy bincount / unique), no per-row Python.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from mdctr.data.schema import Schema
from mdctr.data.table import domain_key

NUMERIC_BINS = 32
DOMAIN = object()  # the domain among the ranked columns: no column name can equal it


@dataclass(frozen=True)
class FeatureScore:
    """One feature's relevance: MI and its chance level in nats, and their difference."""

    name: str
    kind: str
    cardinality: int
    mi: float
    noise_mi: float
    score: float


@dataclass(frozen=True)
class Ranking:
    """Features best first, and the redundancy between every pair."""

    features: list[FeatureScore]
    redundancy: dict[str, dict[str, float]]
    rows: int

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "features": [{"rank": i + 1, **asdict(f)} for i, f in enumerate(self.features)],
            "redundancy": self.redundancy,
        }


def codes(frame: pl.DataFrame, name: str, kind: str, bins: int = NUMERIC_BINS) -> np.ndarray:
    """Integer codes 0..K-1 of one column (missing values, NaN and inf included, get a code of
    their own)."""
    col = pl.col(name)
    if kind == "numeric":
        values = frame[name].cast(pl.Float64).to_numpy()
        values = np.where(np.isfinite(values), values, np.nan)
        present = values[~np.isnan(values)]
        edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])) if present.size else []
        out = np.searchsorted(edges, values, side="right")
        return np.where(np.isnan(values), len(edges) + 1, out).astype(np.int64)
    if kind == "sequence":
        dtype = frame.schema[name]
        items = col.str.split("|") if dtype == pl.String else col.cast(pl.List(pl.String))
        col = items.list.sort().list.join("\x1f")
    ranked = frame.select(col.cast(pl.String).fill_null("\x00<null>").rank("dense")).to_series()
    return ranked.to_numpy().astype(np.int64) - 1


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """MI in nats between integer codes ``x`` and a 0/1 label ``y``."""
    joint = np.bincount(x * 2 + y, minlength=2 * (int(x.max()) + 1)).reshape(-1, 2).astype(np.float64)
    n = joint.sum()
    px, py = joint.sum(1, keepdims=True) / n, joint.sum(0, keepdims=True) / n
    pxy = joint / n
    nz = pxy > 0
    return float((pxy[nz] * np.log(pxy[nz] / (px @ py)[nz])).sum())


def _joint_mi(a: np.ndarray, b: np.ndarray, ha: float, hb: float) -> float:
    _, joint = np.unique(a * (int(b.max()) + 1) + b, return_counts=True)
    return ha + hb - _entropy(joint)


def redundancy(a: np.ndarray, b: np.ndarray, rng: np.random.Generator | None = None) -> float:
    """(MI(a; b) - chance) / (min(H(a), H(b)) - chance), adjusted for chance like AMI: 1 when one
    feature determines the other, about 0 when independent; the chance MI (``b`` shuffled once)
    is what two high-cardinality features share by accident in a finite sample."""
    ha, hb = _entropy(np.bincount(a)), _entropy(np.bincount(b))
    if min(ha, hb) == 0:
        return 0.0
    chance = _joint_mi(a, (rng or np.random.default_rng(0)).permutation(b), ha, hb)
    top = min(ha, hb) - chance
    if top <= 0:
        return 0.0
    return float(min(1.0, max(0.0, (_joint_mi(a, b, ha, hb) - chance) / top)))


def rank_features(
    frame: pl.DataFrame, schema: Schema, permutations: int = 3, seed: int = 0, bins: int = NUMERIC_BINS
) -> Ranking:
    """Rank the schema's features and the domain by noise-corrected MI with the main label."""
    label = frame[schema.label].cast(pl.Int64).to_numpy()
    columns: list[tuple[object, str]] = [(f.name, f.kind) for f in schema.features]
    coded = {name: codes(frame, name, kind, bins) for name, kind in columns}
    columns.append((DOMAIN, "domain"))
    coded[DOMAIN] = codes(frame.select(domain_key(schema.domain).alias("d")), "d", "categorical")
    names = {name: name for name, _ in columns}
    names[DOMAIN] = "<domain>" if "domain" in names else "domain"
    rng = np.random.default_rng(seed)
    shuffled = [rng.permutation(label) for _ in range(permutations)]
    scores = []
    for name, kind in columns:
        x = coded[name]
        mi = mutual_information(x, label)
        noise = float(np.mean([mutual_information(x, y) for y in shuffled])) if shuffled else 0.0
        scores.append(FeatureScore(names[name], kind, int(x.max()) + 1, mi, noise, mi - noise))
    scores.sort(key=lambda s: s.score, reverse=True)
    pairs: dict[str, dict[str, float]] = {names[n]: {} for n, _ in columns}
    for i, (a, _) in enumerate(columns):
        for b, _ in columns[i + 1 :]:
            value = redundancy(coded[a], coded[b], rng)
            pairs[names[a]][names[b]] = pairs[names[b]][names[a]] = value
    return Ranking(scores, pairs, frame.height)
