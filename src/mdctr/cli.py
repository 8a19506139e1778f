"""`mdctr ...`: parse, call the library, print. The only place that sets threads, logging
defaults, and turns an InputError into one line on stderr with exit code 2."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import torch
import typer
from rich.console import Console

from mdctr.errors import InputError

if TYPE_CHECKING:
    from rich.table import Table

    from mdctr.config import Experiment

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multi-domain click-through-rate prediction.",
)
data_app = typer.Typer(no_args_is_help=True, help="Fetch and inspect data.")
app.add_typer(data_app, name="data")
features_app = typer.Typer(no_args_is_help=True, help="Rank and select features.")
app.add_typer(features_app, name="features")
online_app = typer.Typer(no_args_is_help=True, help="Experiments and auctions on seeded simulators.")
app.add_typer(online_app, name="online")
console = Console()
F = TypeVar("F", bound=Callable[..., object])


def _rank() -> int:
    """This process's rank under a launcher (0 without one)."""
    from mdctr.distributed import env_int

    return env_int("RANK", 0)


def _setup(threads: int | None = None, quiet: bool = False) -> None:
    """Logging (rank 0 alone logs progress) and torch threads: by default the cores shared
    among the training processes on this machine."""
    logging.basicConfig(
        level=logging.WARNING if quiet or _rank() else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    from mdctr.distributed import env_int

    local = env_int("LOCAL_WORLD_SIZE", 1)
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // local))


def user_errors(fn: F) -> F:
    """Report an InputError as ``error: ...`` and exit 2, with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return fn(*args, **kwargs)
        except InputError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@data_app.command("fetch")
@user_errors
def data_fetch(
    name: Annotated[str, typer.Argument(help="movielens-100k or movielens-1m")],
    from_path: Annotated[Path | None, typer.Option("--from", help="official GroupLens ml-1m folder")] = None,
    force: Annotated[bool, typer.Option(help="fetch again even when cached")] = False,
) -> None:
    """Fetch a real dataset into the cache ($MDCTR_CACHE or ~/.cache/mdctr)."""
    from mdctr.data import movielens

    _setup()
    path = movielens.fetch(name, from_path=from_path, force=force)
    console.print(f"{name}: {path}")


@data_app.command("synth")
@user_errors
def data_synth(
    out: Annotated[Path, typer.Option(help="folder for train/, valid/, test/ and experiment.yaml")],
    rows: Annotated[int, typer.Option(min=1, help="training rows")] = 1_000_000,
    valid_rows: Annotated[int, typer.Option(min=1, help="validation rows")] = 500_000,
    test_rows: Annotated[int, typer.Option(min=1, help="test rows")] = 500_000,
    shard_rows: Annotated[int, typer.Option(min=1, help="rows per parquet file")] = 1_000_000,
    row_group: Annotated[int, typer.Option(min=1, help="rows per parquet row group")] = 100_000,
    domains: Annotated[int, typer.Option(min=1)] = 6,
    seed: Annotated[int, typer.Option()] = 2024,
) -> None:
    """Write the synthetic multi-domain log as parquet shards of any size (one shard in memory at
    a time), with an experiment file that streams them."""
    import yaml

    from mdctr.config import data_section
    from mdctr.data.cache import atomic_write_text
    from mdctr.data.synthetic import SCHEMA, SyntheticSpec, write_split

    _setup()
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} already holds files; choose an empty --out")
    spec = SyntheticSpec(rows=rows, domains=domains, seed=seed)
    sizes = {"train": rows, "valid": valid_rows, "test": test_rows}
    for split, n in sizes.items():
        files = write_split(spec, out, split, n, shard_rows, row_group)
        console.print(f"{split}: {n:,} rows in {len(files)} files under {out / split}")
    data = {"path": str(out / "train"), "valid_path": str(out / "valid"), "test_path": str(out / "test")}
    data |= data_section(SCHEMA)
    config = {"name": f"synthetic-{rows}", "data": {**data, "streaming": True}}
    atomic_write_text(out / "experiment.yaml", yaml.safe_dump(config, sort_keys=False))
    console.print(f"experiment: {out / 'experiment.yaml'}")


@data_app.command("periods")
@user_errors
def data_periods(
    table: Annotated[str, typer.Argument(help="parquet/CSV table, or a task name (e.g. ml1m-gender)")],
    out: Annotated[Path, typer.Option(help="folder for period-NNN.parquet and periods.json")],
    time: Annotated[
        str, typer.Option(help="column with each event's time (Unix seconds or dates)")
    ] = "timestamp",
    periods: Annotated[int | None, typer.Option(min=2, help="this many periods of about equal rows")] = None,
    every: Annotated[str | None, typer.Option(help="calendar periods instead: 1d, 1w, 1mo, ...")] = None,
) -> None:
    """Cut a log into consecutive periods for daily updates and replay; for a task, also write
    an experiment that trains on the first period (then `mdctr update` each next one)."""
    import yaml

    from mdctr.config import data_section
    from mdctr.data.cache import atomic_write_text
    from mdctr.data.periods import cut, summary
    from mdctr.data.table import read_table
    from mdctr.data.tasks import TASKS
    from mdctr.runs import write_json

    _setup()
    task = TASKS.get(table)
    frame = task.load(None) if task is not None else read_table(table)
    written = cut(frame, time, out, periods, every, where=table)
    write_json(out / "periods.json", summary(written))
    for p in written:
        console.print(f"{Path(p.path).name}: {p.rows:,} rows, {p.start} .. {p.end}", highlight=False)
    if task is not None:
        config = {
            "name": f"{table}-period-000",
            "data": {"path": written[0].path, **data_section(task.schema)},
        }
        atomic_write_text(out / "experiment.yaml", yaml.safe_dump(config, sort_keys=False))
        console.print(f"experiment on the first period: {out / 'experiment.yaml'}")


@features_app.command("rank")
@user_errors
def features_rank(
    config: Annotated[Path, typer.Argument(help="experiment YAML file (its data section is used)")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a key: a.b=value")] = None,
    out: Annotated[Path | None, typer.Option(help="ranking JSON; default <name>-features.json")] = None,
    permutations: Annotated[int, typer.Option(min=1, help="label shuffles for the chance level")] = 3,
) -> None:
    """Rank the features of the training split by mutual information with the label, corrected
    for cardinality (OutRank), with each feature's most redundant partner."""
    from rich.table import Table

    from mdctr.config import load_experiment
    from mdctr.data.table import prepare
    from mdctr.features import rank_features
    from mdctr.runs import write_json

    experiment = load_experiment(config, tuple(set_ or ()))
    _setup(experiment.train.threads)
    data = prepare(experiment.data)
    ranking = rank_features(data.train, data.schema, permutations=permutations)
    table = Table(title=f"{experiment.name}: features by noise-corrected MI ({ranking.rows:,} training rows)")
    for column in ("rank", "feature", "kind", "values", "MI", "chance MI", "score", "most redundant with"):
        table.add_column(
            column, justify="left" if column in ("feature", "kind", "most redundant with") else "right"
        )
    for i, f in enumerate(ranking.features, 1):
        partner, value = max(ranking.redundancy[f.name].items(), key=lambda kv: kv[1], default=("-", 0.0))
        table.add_row(
            str(i), f.name, f.kind, f"{f.cardinality:,}", f"{f.mi:.5f}", f"{f.noise_mi:.5f}", f"{f.score:.5f}",
            f"{partner} ({value:.2f})",
        )  # fmt: skip
    console.print(table)
    target = out or Path(f"{experiment.name}-features.json")
    write_json(target, ranking.to_dict())
    console.print(f"ranking: {target}")


@app.command()
@user_errors
def train(
    config: Annotated[Path, typer.Argument(help="experiment YAML file")],
    out: Annotated[Path | None, typer.Option(help="run directory; default runs/<name>")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a key: a.b=value")] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run in --out")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run in --out")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress output")] = False,
    init: Annotated[
        Path | None, typer.Option(help="continue this run on the config's data (an incremental update)")
    ] = None,
    source: Annotated[
        Path | None, typer.Option(help="model.transfer ctnet: the run whose model is the frozen source")
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(min=1, help="data-parallel training processes on this machine (torch.distributed.run)"),
    ] = 1,
) -> None:
    """Train an experiment; writes the run directory and prints the per-domain table."""
    from mdctr.config import load_experiment

    experiment = load_experiment(config, tuple(set_ or ()))
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        args = ["train", str(config), *(["--out", str(out)] if out else [])]
        args += [a for item in set_ or () for a in ("--set", item)]
        args += [
            f"--{name}" for name, on in (("resume", resume), ("overwrite", overwrite), ("quiet", quiet)) if on
        ]
        args += [
            a for name, path in (("init", init), ("source", source)) if path for a in (f"--{name}", str(path))
        ]
        _launch(nproc, args)
        return
    _train(experiment, out, resume, overwrite, quiet, init, source)


def _launch(nproc: int, args: list[str]) -> None:
    """``mdctr ARGS`` in ``nproc`` processes on this machine, started by torch.distributed.run;
    a process's failure (its own error line already printed) becomes this one's exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--standalone", f"--nproc-per-node={nproc}", "--module", "mdctr", *args])
    except ChildFailedError as err:
        codes = [f.exitcode for f in err.failures.values()]
        raise typer.Exit(next((c for c in codes if c > 0), 1)) from None


def _train(
    experiment: Experiment,
    out: Path | None,
    resume: bool,
    overwrite: bool,
    quiet: bool,
    init: Path | None,
    source: Path | None = None,
) -> None:
    from mdctr.pipeline import train_experiment
    from mdctr.report import domain_table

    _setup(experiment.train.threads, quiet)
    try:
        result = train_experiment(
            experiment,
            out or Path("runs") / experiment.name,
            resume=resume,
            overwrite=overwrite,
            progress=not quiet,
            init=init,
            source=source,
        )
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if _rank() == 0:
        console.print(domain_table(result.metrics, f"{experiment.name} (test)"))
        console.print(f"run directory: {result.run_dir}")


@app.command()
@user_errors
def update(
    run: Annotated[Path, typer.Argument(help="the run to continue (it is only read)")],
    data: Annotated[Path, typer.Option(help="the new labelled rows (parquet/CSV file or folder)")],
    out: Annotated[Path, typer.Option(help="the new run directory")],
    valid: Annotated[Path | None, typer.Option(help="validation rows; default: split from --data")] = None,
    test: Annotated[Path | None, typer.Option(help="test rows; give with --valid")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a key: a.b=value")] = None,
    source: Annotated[
        Path | None, typer.Option(help="CTNet: transfer from this run's model, frozen (sets model.transfer)")
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted update in --out")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress output")] = False,
) -> None:
    """Continue a run on new data (e.g. a day's log): its config with data.path = --data, its
    vocabularies grown, weights and optimizer state carried over, its lineage recorded. With
    --source, the run becomes (or stays) the target tower of a CTNet over that source."""
    from mdctr.config import update_experiment
    from mdctr.data.encode import Encoder
    from mdctr.layout import VOCAB
    from mdctr.runs import read_config

    if not (run / VOCAB).is_file():
        read_config(run)  # says what is wrong with a folder that is no run
        raise InputError(f"{run} is not a complete run (no {VOCAB}); train it again")
    overrides = (*(["model.transfer=ctnet"] if source is not None else []), *(set_ or ()))
    experiment = update_experiment(
        read_config(run), Encoder.load(run / VOCAB).schema, data, valid, test, overrides
    )
    _train(experiment, out, resume, False, quiet, run, source)


@app.command(name="evaluate")
@user_errors
def evaluate_cmd(
    run: Annotated[Path, typer.Argument(help="run directory")],
    data: Annotated[
        Path | None, typer.Option(help="labelled parquet/CSV; default: the run's test split")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="metrics file; default RUN/metrics.json or RUN/metrics-<data name>.json"),
    ] = None,
) -> None:
    """Per-domain metrics of a run; prints the table and writes metrics JSON."""
    from mdctr.layout import METRICS, metrics_for
    from mdctr.pipeline import evaluate_run
    from mdctr.report import domain_table
    from mdctr.runs import write_json

    _setup()
    metrics = evaluate_run(run, data)
    target = out or run / (METRICS if data is None else metrics_for(data.stem))
    write_json(target, metrics)
    console.print(domain_table(metrics, f"{run.name} on {data or 'test split'}"))
    console.print(f"metrics: {target}")


@app.command(name="predict")
@user_errors
def predict_cmd(
    run: Annotated[Path, typer.Argument(help="run directory")],
    input_path: Annotated[Path, typer.Argument(help="parquet/CSV with the run's feature columns")],
    out: Annotated[Path, typer.Option(help="output .parquet or .csv")],
) -> None:
    """Score a table: the input columns plus ``score`` and ``domain_seen``."""
    from mdctr.pipeline import predict_run

    _setup()
    result = predict_run(run, input_path, out)
    console.print(f"scored {result.height:,} rows -> {out}")


@app.command()
@user_errors
def adapt(
    run: Annotated[Path, typer.Argument(help="an MLoRA run directory")],
    domain: Annotated[str, typer.Option(help="the new domain's value in the domain column")],
    data: Annotated[Path, typer.Option(help="labelled parquet/CSV with the new domain's rows")],
    out: Annotated[Path | None, typer.Option(help="new run directory; default RUN-<domain>")] = None,
) -> None:
    """Add a domain to an MLoRA run by training only its adapter; other domains stay bit-identical."""
    from mdctr.adapt import add_domain
    from mdctr.report import domain_table

    target = out or run.with_name(f"{run.name}-{domain}")
    metrics = add_domain(run, domain, data, target)
    _setup()
    console.print(domain_table(metrics, f"{domain} (held-out rows)"))
    console.print(f"run directory: {target}")


@app.command()
@user_errors
def export(
    run: Annotated[Path, typer.Argument(help="run directory")],
    out: Annotated[Path, typer.Option(help="ONNX file to write")],
    domain: Annotated[
        str | None, typer.Option(help="merge the adapters for this domain into a plain graph")
    ] = None,
) -> None:
    """Export a run to ONNX (dynamic batch), checked against PyTorch before it is written."""
    from mdctr import export as onnx_export
    from mdctr.predictor import export_run
    from mdctr.runs import load_run

    _setup()
    try:
        exported = export_run(load_run(run), domain)
    except onnx_export.ExportError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    onnx_export.write(exported, out)
    console.print(
        f"{out}: inputs {', '.join(exported.inputs)} -> prob; "
        f"max |onnx - torch| = {exported.max_abs_diff:.1e} on {onnx_export.PARITY_ROWS} rows"
    )


@app.command()
@user_errors
def serve(
    run: Annotated[Path, typer.Argument(help="run directory")],
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    max_candidates: Annotated[int, typer.Option(min=1, help="largest candidate list per request")] = 1000,
    backend: Annotated[str, typer.Option(help="onnx or torch")] = "onnx",
    threads: Annotated[int, typer.Option(min=1, help="scoring threads")] = 1,
    onnx: Annotated[Path | None, typer.Option(help="an exported ONNX file of this run")] = None,
) -> None:
    """Score over HTTP: POST /predict, GET /health, GET /metadata."""
    from mdctr.predictor import Predictor
    from mdctr.server import serve as run_server

    _setup(threads)
    predictor = Predictor(run, backend=backend, threads=threads, onnx_path=onnx)  # type: ignore[arg-type]
    console.print(f"serving {run} ({backend}) on http://{host}:{port}", highlight=False)
    run_server(predictor, host, port, max_candidates)


def main() -> None:
    app()


def _online_table(title: str, columns: tuple[str, ...]) -> Table:
    """A results table: the first column names the row, the others are right-aligned figures."""
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="right" if i else "left", no_wrap=True)
    return table


@online_app.command("experiment")
@user_errors
def online_experiment(
    config: Annotated[Path, typer.Argument(help="experiment YAML (arms, delay, policies, ...)")],
    out: Annotated[Path, typer.Option(help="folder for experiment.json and regret.png")] = Path("online"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a key: a.b=value")] = None,
) -> None:
    """Simulate an adaptive experiment with delayed conversions: regret and decision per policy."""
    from mdctr.data.cache import make_dir
    from mdctr.online.config import ExperimentConfig, load
    from mdctr.online.experiment import compare, plot_regret
    from mdctr.runs import write_json

    cfg = load(ExperimentConfig, config, tuple(set_ or ()))
    _setup()
    make_dir(out)
    result = compare(cfg)
    table = _online_table(
        f"{cfg.name}: best arm {result['best_arm']}, {cfg.seeds} seeds (95 % CI)",
        ("policy", "error rate (CI)", "regret", "decided at", "early"),
    )
    for row in result["policies"]:
        low, high = row["error_ci"]
        table.add_row(
            row["policy"],
            f"{row['error_rate']:.2f} ({low:.2f}-{high:.2f})",
            f"{row['regret']:.1f}±{row['regret_ci']:.1f}",
            f"{row['decision_step']:.0f}±{row['decision_step_ci']:.0f}",
            f"{row['decided_early']:.0%}",
        )
    console.print(table)
    write_json(out / "experiment.json", result)
    plot_regret(result, str(out / "regret.png"))
    console.print(f"results: {out / 'experiment.json'}, plot: {out / 'regret.png'}")


@online_app.command("auction")
@user_errors
def online_auction(
    config: Annotated[Path, typer.Argument(help="auction YAML (slots, bidders, run, learned, ...)")],
    out: Annotated[Path, typer.Option(help="folder for auction.json")] = Path("online"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a key: a.b=value")] = None,
    quiet: Annotated[bool, typer.Option(help="no training output")] = False,
) -> None:
    """GSP, VCG and the learned auction on the same auctions: revenue, welfare, IC violation."""
    from mdctr.data.cache import make_dir
    from mdctr.online.blend import compare
    from mdctr.online.config import AuctionConfig, load
    from mdctr.runs import write_json

    cfg = load(AuctionConfig, config, tuple(set_ or ()))
    _setup(quiet=quiet)
    make_dir(out)
    result = compare(cfg, log=not quiet)
    columns = ("revenue", "welfare", "user_value", "objective", "ad_slots", "ic_violation")
    table = _online_table(
        f"{cfg.name}: {cfg.auctions} auctions, {cfg.slots} slots ({result['candidates']} CTR)",
        ("mechanism", *columns),
    )
    for name, row in result["mechanisms"].items():
        table.add_row(name, *(f"{row[c]:.4g}" for c in columns))
    console.print(table)
    write_json(out / "auction.json", result)
    console.print(f"results: {out / 'auction.json'}")
