"""Embedding benchmark: parameters vs AUC for table, hashed and unified embeddings at several
sizes, on ml1m-gender and synthetic (DNN, 3 seeds), with a Pareto plot.

    python benchmarks/embeddings.py                    # -> results/embeddings.md / .json / .png
    python benchmarks/embeddings.py --speed            # samples/s, one epoch each, idle machine

Sizes: ``hashed`` with 250 / 1,000 / 4,000 buckets per feature; ``unified`` with one shared table
of 2,000 / 8,000 / 32,000 rows and 1 or 4 chunks. ML-1M's plain tables hold about 13,000 rows,
synthetic's about 8,500 (the largest feature has 5,000 values). Runs accumulate in
``results/embeddings-runs.jsonl`` (same machinery and options as ``multidomain.py``); after
the runs, the Pareto plot ``embeddings-pareto.png`` puts WAUC against parameter count.
"""

from __future__ import annotations

import json

from multidomain import RESULTS, main

SIZES = [
    "none",
    *(f"none+model.embedding.kind=hashed+model.embedding.buckets={b}" for b in (250, 1000, 4000)),
    *(
        f"none+model.embedding.kind=unified+model.embedding.buckets={b}+model.embedding.chunks={c}"
        for b in (2000, 8000, 32000)
        for c in (1, 4)
    ),
]


def pareto_plot() -> None:
    """WAUC against parameters per task, one marker per embedding kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = RESULTS / "embeddings.json"
    if not path.is_file():
        return
    rows = json.loads(path.read_text())
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for kind, marker in (("table", "o"), ("hashed", "s"), ("unified", "^")):
            sub = [
                r
                for r in rows
                if r["task"] == task and (kind in r["model"] or (kind == "table" and r["model"] == "none"))
            ]
            ax.errorbar(
                [r["params"] for r in sub], [r["wauc_mean"] for r in sub], yerr=[r["wauc_std"] for r in sub],
                fmt=marker, label=kind,
            )  # fmt: skip
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
