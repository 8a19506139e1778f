"""AUC, logloss, per-domain tables, mean AUC, WAUC and GAUC as plain functions."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

UNSEEN = "<unseen>"


def auc(label: np.ndarray, prob: np.ndarray) -> float:
    """ROC AUC; NaN when only one class is present."""
    if len(label) == 0 or np.unique(label).size < 2:
        return math.nan
    from sklearn.metrics import roc_auc_score  # here, not at import: ~75 MB, first needed after data prep

    return float(roc_auc_score(label, prob))


def logloss(label: np.ndarray, prob: np.ndarray) -> float:
    """Binary cross-entropy of probabilities (clipped to [1e-7, 1 - 1e-7])."""
    if len(label) == 0:
        return math.nan
    from sklearn.metrics import log_loss

    return float(log_loss(label, np.clip(prob, 1e-7, 1 - 1e-7), labels=[0, 1]))


def gauc(label: np.ndarray, prob: np.ndarray, group: np.ndarray) -> float:
    """Impression-weighted mean of per-group AUC; groups with one class are skipped.

    Vectorised: per-group AUC from average ranks (ties count one half), as in Mann-Whitney U.
    """
    frame = pl.DataFrame({"g": group, "y": label.astype(np.float64), "p": prob.astype(np.float64)})
    per_group = (
        frame.with_columns(pl.col("p").rank("average").over("g").alias("r"))
        .group_by("g")
        .agg(n=pl.len(), pos=pl.col("y").sum(), rank_pos=(pl.col("r") * pl.col("y")).sum())
        .with_columns(neg=pl.col("n") - pl.col("pos"))
        .filter((pl.col("pos") > 0) & (pl.col("neg") > 0))
        .with_columns(
            auc=(pl.col("rank_pos") - pl.col("pos") * (pl.col("pos") + 1) / 2)
            / (pl.col("pos") * pl.col("neg"))
        )
    )
    if per_group.height == 0:
        return math.nan
    return float((per_group["auc"] * per_group["n"]).sum() / per_group["n"].sum())


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def evaluate(
    label: np.ndarray,
    prob: np.ndarray,
    domain: np.ndarray,
    domain_names: list[str],
    user: np.ndarray | None = None,
) -> dict:
    """The metrics.json contract: overall, per-domain, mean AUC, WAUC, GAUC.

    ``domain`` holds indices into ``domain_names``; index ``len(domain_names)`` marks rows of
    unseen domains, reported together under ``<unseen>`` with ``"unseen": true`` and left out
    of mean AUC and WAUC. Undefined values (one class only) are written as null.
    """
    label = np.asarray(label, dtype=np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    domains: dict[str, dict] = {}
    for idx, name in enumerate([*domain_names, UNSEEN]):
        mask = domain == idx
        if not mask.any():
            continue
        entry = {
            "auc": _clean(auc(label[mask], prob[mask])),
            "logloss": _clean(logloss(label[mask], prob[mask])),
            "n": int(mask.sum()),
            "pos_rate": round(float(label[mask].mean()), 6),
        }
        if name == UNSEEN:
            entry["unseen"] = True
        domains[name] = entry
    scored = [d for name, d in domains.items() if name != UNSEEN and d["auc"] is not None]
    mean_auc = float(np.mean([d["auc"] for d in scored])) if scored else math.nan
    weights = np.array([d["n"] for d in scored], dtype=np.float64)
    wauc = float(np.dot([d["auc"] for d in scored], weights) / weights.sum()) if scored else math.nan
    return {
        "overall": {
            "auc": _clean(auc(label, prob)),
            "logloss": _clean(logloss(label, prob)),
            "n": len(label),
        },
        "domains": domains,
        "mean_auc": _clean(mean_auc),
        "wauc": _clean(wauc),
        "gauc": None if user is None else _clean(gauc(label, prob, user)),
    }


def headline(metrics: dict) -> dict:
    """The figures a results table needs from a metrics dict, flat: auc, logloss, mean_auc, wauc,
    gauc and per-domain AUC."""
    return {
        "auc": metrics["overall"]["auc"],
        "logloss": metrics["overall"]["logloss"],
        "mean_auc": metrics["mean_auc"],
        "wauc": metrics["wauc"],
        "gauc": metrics["gauc"],
        "domains": {k: v["auc"] for k, v in metrics["domains"].items()},
    }
