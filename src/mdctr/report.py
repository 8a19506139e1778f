"""Per-domain tables (terminal and markdown) and plots of a run."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from rich.table import Table

from mdctr.data.cache import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot() -> ModuleType:
    """matplotlib's pyplot on the Agg backend, imported at the first plot: importing it with
    mdctr would add ~40 MB to every process's peak memory, which falls before any plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rows(metrics: dict) -> list[tuple[str, ...]]:
    rows = [
        (name, _fmt(d["auc"]), _fmt(d["logloss"]), f"{d['n']:,}", _fmt(d["pos_rate"], 3))
        for name, d in metrics["domains"].items()
    ]
    overall = metrics["overall"]
    rows.append(("overall", _fmt(overall["auc"]), _fmt(overall["logloss"]), f"{overall['n']:,}", ""))
    return rows


HEADER = ("domain", "AUC", "logloss", "n", "pos rate")


def summary_line(metrics: dict) -> str:
    """mean AUC, WAUC and GAUC in one line."""
    line = (
        f"mean AUC {_fmt(metrics['mean_auc'])}   WAUC {_fmt(metrics['wauc'])}   GAUC {_fmt(metrics['gauc'])}"
    )
    if "oracle" in metrics:
        line += f"   (oracle AUC {_fmt(metrics['oracle']['auc'])}, WAUC {_fmt(metrics['oracle']['wauc'])})"
    return line


def domain_table(metrics: dict, title: str = "") -> Table:
    """A rich table of per-domain and overall metrics."""
    table = Table(title=title or None, caption=summary_line(metrics))
    for i, head in enumerate(HEADER):
        table.add_column(head, justify="left" if i == 0 else "right")
    for row in _rows(metrics):
        table.add_row(*row)
    return table


def markdown(metrics: dict, title: str, history: list[dict] | None = None) -> str:
    """The report.md of a run: per-domain table, summary and training curve."""
    lines = [f"# {title}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(metrics)]
    lines += ["", summary_line(metrics), ""]
    if history:
        lines += ["| epoch | train loss | valid AUC | valid logloss | samples/s |", "|---|---|---|---|---|"]
        lines += [
            f"| {h['epoch']} | {h['train_loss']:.4f} | {_fmt(h['valid_auc'])} | "
            f"{_fmt(h['valid_logloss'])} | {h['samples_per_s']:,.0f} |"
            for h in history
        ]
    return "\n".join(lines) + "\n"


def _save(fig: Figure, path: str) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    _pyplot().close(fig)


def plot_domains(metrics: dict, path: str) -> None:
    """Bar chart of test AUC per domain, with the overall AUC as a line."""
    names = [n for n, d in metrics["domains"].items() if d["auc"] is not None]
    values = [metrics["domains"][n]["auc"] for n in names]
    fig, ax = _pyplot().subplots(figsize=(max(4, 0.7 * len(names) + 2), 3.2))
    ax.bar(names, values, color="#4c72b0")
    if metrics["overall"]["auc"] is not None:
        ax.axhline(metrics["overall"]["auc"], color="#c44e52", linestyle="--", label="overall")
        ax.legend(loc="lower right")
    low = min(values, default=0.5)
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(values, default=1.0) + 0.02))
    ax.set_ylabel("test AUC")
    ax.set_title("AUC per domain")
    _save(fig, path)


def plot_curves(history: list[dict], path: str) -> None:
    """Training loss and validation AUC per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = _pyplot().subplots(1, 2, figsize=(8, 3.2))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    left.plot(epochs, [h["valid_logloss"] for h in history], marker="o", label="valid logloss")
    left.set_xlabel("epoch")
    left.legend()
    right.plot(epochs, [h["valid_auc"] for h in history], marker="o", color="#55a868")
    right.set_xlabel("epoch")
    right.set_ylabel("valid AUC")
    _save(fig, path)
