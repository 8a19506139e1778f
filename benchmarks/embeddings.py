"""Embedding benchmark: parameters vs AUC for table, hashed and unified embeddings at several
sizes, on ml1m-gender and synthetic (DNN, 3 seeds), with a Pareto plot.

    python benchmarks/embeddings.py                    # -> results/embeddings.md / .json / .png
    python benchmarks/embeddings.py --speed            # samples/s, one epoch each, idle machine

Sizes: ``table`` (one collision-free table per feature) with 4, 8 and 16 dimensions; ``hashed``
with 250 / 1,000 / 4,000 buckets per feature; ``unified`` with one shared table of 2,000 / 8,000 /
32,000 rows and 1 or 4 chunks. ``hashed`` and ``unified`` keep 16 dimensions. ML-1M's plain tables
hold about 13,000 rows, synthetic's about 8,500 (the largest feature has 5,000 values). Runs
accumulate in ``results/embeddings-runs.jsonl`` (same machinery and options as
``multidomain.py``). After the runs, ``embeddings-pareto.png`` puts WAUC against parameter count,
and ``embeddings.md`` ends with each task's Pareto front (no other configuration has both fewer
parameters and a higher mean WAUC).
"""

from __future__ import annotations

import json

from multidomain import RESULTS, main

SIZES = [
    "none",
    *(f"none+model.embedding_dim={d}" for d in (4, 8)),
    *(f"none+model.embedding.kind=hashed+model.embedding.buckets={b}" for b in (250, 1000, 4000)),
    *(
        f"none+model.embedding.kind=unified+model.embedding.buckets={b}+model.embedding.chunks={c}"
        for b in (2000, 8000, 32000)
        for c in (1, 4)
    ),
]


def _kind(spec: str) -> str:
    return next((kind for kind in ("hashed", "unified") if kind in spec), "table")


def _short(spec: str) -> str:
    """``none+model.embedding.kind=unified+model.embedding.buckets=8000+model.embedding.chunks=4``
    -> ``unified 8000x4``."""
    options = dict(part.split("=", 1) for part in spec.split("+model.")[1:])
    kind = _kind(spec)
    if kind == "table":
        return f"table dim {options.get('embedding_dim', 16)}"
    size = options["embedding.buckets"] + (
        f"x{options.get('embedding.chunks', 1)}" if kind == "unified" else ""
    )
    return f"{kind} {size}"


def pareto_front(rows: list[dict]) -> list[dict]:
    """The rows no other row beats with fewer parameters and a higher mean WAUC, by parameters."""
    front: list[dict] = []
    for row in sorted(rows, key=lambda r: (r["params"], -r["wauc_mean"])):
        if not front or row["wauc_mean"] > front[-1]["wauc_mean"]:
            front.append(row)
    return front


def pareto_report(rows: list[dict]) -> str:
    out = ["## Pareto front (parameters vs WAUC)", ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        sub = [r for r in rows if r["task"] == task]
        out += [f"{task}:", "", "| embedding | params | WAUC | seeds |", "|---|---|---|---|"]
        out += [
            f"| {_short(r['model'])} | {r['params']:,} | {r['wauc_mean']:.4f} ± {r['wauc_std']:.4f} | {r['seeds']} |"
            for r in pareto_front(sub)
        ]
        out.append("")
    return "\n".join(out)


def pareto_plot() -> None:
    """WAUC against parameters per task, one marker per embedding kind; the front in the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = RESULTS / "embeddings.json"
    if not path.is_file():
        return
    rows = json.loads(path.read_text())
    report = RESULTS / "embeddings.md"
    report.write_text(report.read_text() + "\n" + pareto_report(rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for kind, marker in (("table", "o"), ("hashed", "s"), ("unified", "^")):
            sub = [r for r in rows if r["task"] == task and _kind(r["model"]) == kind]
            ax.errorbar(
                [r["params"] for r in sub], [r["wauc_mean"] for r in sub], yerr=[r["wauc_std"] for r in sub],
                fmt=marker, label=kind,
            )  # fmt: skip
            for r in sub:
                ax.annotate(_short(r["model"]).split(" ", 1)[1], (r["params"], r["wauc_mean"]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("test WAUC")
        ax.set_title(task)
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "embeddings-pareto.png", dpi=100)


if __name__ == "__main__":
    main("embeddings", tasks=("ml1m-gender", "synthetic"), models=tuple(SIZES), seeds=3, doc=__doc__)
    pareto_plot()
