"""Training from parquet files larger than memory: row groups read one window at a time.

An epoch visits the row groups of a split in a fresh random order. Consecutive groups are
gathered into windows of at least ``shuffle_buffer`` rows; each window is read, encoded and
served in a random order of its rows, while the next window is read in the background. Every
row is served exactly once per epoch, and the n-th batch of an epoch is a function of the seed
and n alone, so an epoch can start at any batch without reading what comes before it (resume).
Memory holds two windows, whatever the size of the data.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mdctr.config import DataConfig
from mdctr.data.batch import Batch
from mdctr.data.encode import Encoded, Encoder
from mdctr.data.loader import as_batch, batch_order, slices
from mdctr.data.schema import Schema
from mdctr.data.table import SPLITS, check_classes, check_columns, label_bounds, parquet_files
from mdctr.errors import InputError


@dataclass(frozen=True)
class Piece:
    """One row group of one file."""

    file: Path
    group: int
    rows: int


def _open(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(
            f"{path}: not a readable parquet file ({first}); write it again or remove it"
        ) from None


def survey(files: Sequence[Path], schema: Schema) -> list[Piece]:
    """The row groups of ``files``, after checking that every file holds the schema's columns
    with the same types as the first file. A file that is not parquet (or is truncated), lacks a
    column or changes a column's type is an InputError naming it."""
    pieces, first_types = [], None
    for path in files:
        handle = _open(path)
        arrow = handle.schema_arrow
        present = [c for c in schema.columns if c in arrow.names]
        types = pl.from_arrow(arrow.empty_table().select(present)).schema
        check_columns(types, schema, str(path))
        if first_types is None:
            first_types, first = types, path
        changed = next((c for c in present if c in first_types and types[c] != first_types[c]), None)
        if changed is not None:
            raise InputError(
                f"{path}: column {changed!r} is {types[changed]} here but {first_types[changed]} in "
                f"{first}; write every file of a split with one schema"
            )
        meta = handle.metadata
        pieces += [Piece(path, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    if not sum(p.rows for p in pieces):
        raise InputError(f"{files[0]} and the other files of its split have no rows")
    return pieces


def uncompressed_bytes(files: Sequence[Path]) -> int:
    """The data's size once decoded, from the files' metadata (no rows read)."""
    total = 0
    for path in files:
        meta = _open(path).metadata
        total += sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    return total


def check_labels(files: Sequence[Path], schema: Schema, split: str) -> None:
    """Every label of every file of one split is 0 or 1, and a training or validation split
    holds both classes (``check_classes``), read in one streamed pass over the label columns;
    the first file with a missing or other value is named."""
    name = "file"
    while name in schema.columns:
        name = f"_{name}"
    scan = pl.scan_parquet(files, include_file_paths=name)
    bad = [
        scan.filter(pl.col(c).cast(pl.Float64).fill_nan(None).is_in([0.0, 1.0]).not_() | pl.col(c).is_null())
        .select(pl.col(name), pl.col(c).cast(pl.String).alias("value"))
        .head(1)
        for c in schema.labels
    ]
    *found_bad, bounds = pl.collect_all([*bad, label_bounds(scan, schema)], engine="streaming")
    for label, found in zip(schema.labels, found_bad, strict=True):
        if found.height:
            value = found["value"][0]
            raise InputError(
                f"{found[name][0]}: label column {label!r} holds {value if value is not None else 'a missing value'}; "
                f"every label must be 0 or 1"
            )
    if split in ("train", "valid"):
        check_classes(bounds, schema, split, str(files[0].parent))


def _blocks(pieces: Sequence[Piece], ranks: int) -> list[list[Piece]]:
    """``pieces`` in order, cut into ``ranks`` contiguous non-empty blocks of about equal rows."""
    ends = np.cumsum([p.rows for p in pieces])  # rows up to and including each piece
    cuts = [0]
    for k in range(1, ranks):
        nearest = int(np.abs(ends - ends[-1] * k / ranks).argmin()) + 1
        cuts.append(min(max(nearest, cuts[-1] + 1), len(pieces) - ranks + k))
    return [list(pieces[a:b]) for a, b in itertools.pairwise([*cuts, len(pieces)])]


def _dealt(pieces: Sequence[Piece], order: Sequence[int], ranks: int) -> list[list[Piece]]:
    """Pieces in ``order`` dealt to ``ranks`` hands, each to the hand with the fewest rows so far."""
    hands: list[list[Piece]] = [[] for _ in range(ranks)]
    rows = [0] * ranks
    for i in order:
        r = min(range(ranks), key=lambda k: (rows[k], k))
        hands[r].append(pieces[i])
        rows[r] += pieces[i].rows
    return hands


class ParquetStream:
    """A split in parquet files, served as Batches (training) or encoded chunks (evaluation).

    ``shard(rank, ranks)`` is one data-parallel rank's view: each epoch deals the shuffled row
    groups to the ranks (disjoint, balanced by rows, none empty), a rank serves its own in
    batches of ``batch_size / ranks`` rows, and a rank that runs out first takes weightless
    filler steps so that every rank takes the same number of steps; it scores a contiguous
    block of the row groups."""

    def __init__(
        self, pieces: Sequence[Piece], encoder: Encoder, shuffle_buffer: int, rank: int = 0, ranks: int = 1
    ) -> None:
        self.pieces, self.encoder, self.shuffle_buffer = list(pieces), encoder, shuffle_buffer
        self.rank, self.ranks = rank, ranks
        self._handles: dict[Path, pq.ParquetFile] = {}

    def __len__(self) -> int:
        return sum(p.rows for p in self.pieces)

    def shard(self, rank: int, ranks: int) -> ParquetStream:
        if len(self.pieces) < ranks:
            where = self.pieces[0].file.parent
            raise InputError(
                f"{where}: {len(self.pieces)} row groups for {ranks} processes; every process needs "
                f"its own, so write smaller row groups (pyarrow's row_group_size) or run fewer processes"
            )
        return ParquetStream(self.pieces, self.encoder, self.shuffle_buffer, rank, ranks)

    def _read(self, pieces: Sequence[Piece]) -> Encoded:
        tables = []
        for piece in pieces:
            if piece.file not in self._handles:
                self._handles[piece.file] = _open(piece.file)
            handle = self._handles[piece.file]
            present = [c for c in self.encoder.schema.columns if c in handle.schema_arrow.names]
            try:
                tables.append(handle.read_row_group(piece.group, columns=present))
            except (pa.ArrowException, OSError) as err:
                raise InputError(f"{piece.file}: row group {piece.group} cannot be read ({err})") from None
        return self.encoder.transform(pl.from_arrow(pa.concat_tables(tables)))

    def windows(self, pieces: Sequence[Piece]) -> list[list[Piece]]:
        """Consecutive ``pieces``, gathered until each window holds ``shuffle_buffer`` rows."""
        out, current, rows = [], [], 0
        for piece in pieces:
            current.append(piece)
            rows += piece.rows
            if rows >= self.shuffle_buffer:
                out.append(current)
                current, rows = [], 0
        return out + ([current] if current else [])

    def _prefetched(self, groups: Sequence[Sequence[Piece]]) -> Iterator[Encoded]:
        """``_read`` of each group in turn, the next one read in a background thread."""
        if not groups:
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending: Future = pool.submit(self._read, groups[0])
            try:
                for following in [*groups[1:], None]:
                    done = pending.result()
                    if following is not None:
                        pending = pool.submit(self._read, following)
                    yield done
            finally:
                pending.cancel()

    def batches(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        by_domain: bool = False,
        start: int = 0,
    ) -> Iterator[Batch]:
        """Batches of every row once: windows of shuffled row groups, each served in a random
        order of its rows (in file order without a generator); from batch ``start`` on."""
        seed = None if generator is None else int(torch.randint(0, 1 << 62, (), generator=generator))
        order = (
            range(len(self.pieces))
            if seed is None
            else np.random.default_rng(seed).permutation(len(self.pieces))
        )
        local = math.ceil(batch_size / self.ranks)
        hands = [self.windows(h) for h in _dealt(self.pieces, order, self.ranks)]
        counts = [sum(math.ceil(sum(p.rows for p in w) / local) for w in h) for h in hands]
        windows, steps = hands[self.rank], max(counts)
        first, skipped = 0, 0
        while first < len(windows) and start - skipped >= (
            n := math.ceil(sum(p.rows for p in windows[first]) / local)
        ):
            skipped += n
            first += 1
        served, last = start, None
        for w, encoded in enumerate(self._prefetched(windows[first:]), first):
            rows = as_batch(encoded)
            shuffle = None if seed is None else torch.Generator().manual_seed(seed + w + 1)
            order_w = batch_order(len(rows), local, shuffle, rows.domain if by_domain else None)
            for batch in slices(rows, order_w, local, start - skipped if w == first else 0):
                if self.ranks > 1:
                    batch.weight = self.ranks * len(batch) / batch_size
                served, last = served + 1, batch
                yield batch
        if served < steps and last is None:  # resumed past this rank's own batches
            last = as_batch(self._read(windows[0][:1])).index(slice(0, 1))
        for _ in range(steps - served):
            yield dataclasses.replace(last, weight=0.0)

    def chunks(self) -> Iterator[Encoded]:
        """Every row group encoded, in file order (a shard: its block of them)."""
        pieces = self.pieces if self.ranks == 1 else _blocks(self.pieces, self.ranks)[self.rank]
        yield from self._prefetched([[p] for p in pieces])


def streams(cfg: DataConfig) -> bool:
    """Whether an experiment's data is streamed: ``data.streaming`` true, or ``auto`` with
    parquet split files whose training part decodes to more than ``memory_budget_mb``."""
    text = (".csv", ".tsv", ".txt")
    if cfg.streaming is True:
        if any(str(p).lower().endswith(text) for p in (cfg.path, cfg.valid_path, cfg.test_path) if p):
            raise InputError(
                "data.streaming reads parquet; convert the CSV files (e.g. polars' sink_parquet)"
            )
        if cfg.task is not None or cfg.valid_path is None:
            raise InputError(
                "data.streaming needs your own parquet files with data.path, data.valid_path and "
                "data.test_path (a split of its own each; e.g. `mdctr data synth` writes them)"
            )
        return True
    if cfg.streaming is False or cfg.task is not None or cfg.valid_path is None:
        return False
    if str(cfg.path).lower().endswith(text):
        return False
    return uncompressed_bytes(parquet_files(cfg.path)) > cfg.memory_budget_mb * 2**20


@dataclass(frozen=True)
class Splits:
    """The checked row groups of the train, valid and test files."""

    schema: Schema
    files: dict[str, list[Path]]
    pieces: dict[str, list[Piece]]

    def scan(self, split: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.files[split])

    def source(self, split: str, encoder: Encoder, shuffle_buffer: int) -> ParquetStream:
        return ParquetStream(self.pieces[split], encoder, shuffle_buffer)


def open_splits(cfg: DataConfig, schema: Schema, splits: Sequence[str] = SPLITS) -> Splits:
    """Survey and check the files of ``splits``: columns and types per file, then the labels."""
    paths = {"train": cfg.path, "valid": cfg.valid_path, "test": cfg.test_path}
    files = {split: parquet_files(paths[split]) for split in splits}
    pieces = {split: survey(f, schema) for split, f in files.items()}
    for split, split_files in files.items():  # a split's files share their types (survey); splits may differ
        check_labels(split_files, schema, split)
    return Splits(schema, files, pieces)
