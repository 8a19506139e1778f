"""Property-based layer of the hostile-input suite: whatever a CSV file or a scoring request
holds, reading, checking and encoding it ends in encoded arrays within range, or in an
InputError of one line; never another exception."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mdctr.config import parse_experiment
from mdctr.data.encode import Encoded, Encoder
from mdctr.data.table import prepare, read_table
from mdctr.errors import InputError

from ..conftest import click_table, table_config

COLUMNS = ("scene", "user", "item", "category", "price", "tags", "click")
FUZZ = settings(
    max_examples=int(os.environ.get("MDCTR_FUZZ_EXAMPLES", 80)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
numbers = st.one_of(  # what a numeric column may hold: also nan, inf and integers beyond 64 bits
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "inf", "-inf", "NaN", "1e309"]),
)
not_numbers = st.sampled_from(["0x10", "1,5", " 3 ", "abc"])
cells = st.one_of(
    st.just(""), words, numbers, st.sampled_from(["0", "1", "true", "false", "a|b|c", "|", '"'])
)
labels = st.one_of(st.sampled_from(["0", "1"]), cells)


@st.composite
def tables(draw: st.DrawFn) -> str:
    """CSV text: a header of the schema's columns (sometimes one dropped or repeated) and rows of
    arbitrary cells, quoted properly or joined raw."""
    header = list(COLUMNS)
    clean = draw(st.booleans())  # half the tables: 0/1 labels and numbers in price, to get past the checks
    if not clean and draw(st.booleans()):
        header[draw(st.integers(0, len(header) - 1))] = draw(st.sampled_from(["", "click", "price ", "x"]))
    rows = draw(
        st.lists(
            st.lists(cells, min_size=len(header) - 1, max_size=len(header) + 1),
            min_size=12 * clean,
            max_size=60,
        )
    )
    rows = [
        [
            draw(st.sampled_from("ab")),
            *r[1:4],
            draw(numbers),
            draw(cells),
            str((i + draw(st.integers(0, 1))) % 2),
        ]
        if clean
        else [*r[:-1], draw(labels)]
        for i, r in enumerate(rows)
    ]
    if clean or draw(st.booleans()):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))).writerows([header, *rows])
        return buffer.getvalue()
    return "\n".join(",".join(r) for r in [header, *rows]) + "\n"


def in_range(encoded: Encoded, encoder: Encoder) -> None:
    spec = encoder.input_spec()
    for j, name in enumerate(encoder.categorical):
        ids = encoded.sparse[:, j]
        assert ids.min(initial=0) >= 0 and ids.max(initial=0) < encoder.vocab_size(name), name
    for seq, f in zip(encoded.sequences, encoder.schema.sequence, strict=True):
        assert seq.shape[1] == f.max_len and seq.min(initial=0) >= 0
        assert seq.max(initial=0) < encoder.vocab_size(f.name)
    assert np.isfinite(encoded.dense).all()
    assert encoded.domain.min(initial=0) >= 0 and encoded.domain.max(initial=0) <= spec.domains
    if encoded.labels is not None:
        assert set(np.unique(encoded.labels)) <= {0.0, 1.0}


def one_line(err: InputError) -> None:
    assert str(err) and "\n" not in str(err) and "Traceback" not in str(err)


def encodes_or_fails_in_one_line(path: Path) -> None:
    """The user's path short of training, on the table at ``path``: check, split, fit, encode
    every split, and encode the table again for scoring."""
    experiment = parse_experiment(table_config(path))
    try:
        data = prepare(experiment.data)
        encoder = Encoder.fit(data.train, data.schema)
        for part in (data.train, data.valid, data.test):
            in_range(encoder.transform(part), encoder)
        scored = read_table(path, data.schema.id_columns).drop("click")
        in_range(encoder.encode_table(scored, str(path), need_label=False), encoder)
        event("encoded")
    except InputError as err:
        one_line(err)
        event(str(err).replace(str(path), "")[:90])


@FUZZ
@given(text=tables())
def test_any_csv_encodes_in_range_or_fails_in_one_line(text: str, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    encodes_or_fails_in_one_line(path)


DTYPES = {  # a parquet column's type, and values of it (None among them)
    "int": (pl.Int64, st.integers(-(2**63), 2**63 - 1)),
    "float": (pl.Float64, st.floats(allow_nan=True, allow_infinity=True)),
    "text": (pl.String, words),
    "bool": (pl.Boolean, st.booleans()),
    "null": (pl.Null, st.none()),
    "text list": (pl.List(pl.String), st.lists(st.one_of(words, st.none()), max_size=5)),
    "int list": (pl.List(pl.Int64), st.lists(st.one_of(st.integers(-5, 5), st.none()), max_size=5)),
}


SCALAR = ("int", "float", "text", "bool", "null")
VALID = {  # the types each column's kind accepts
    **dict.fromkeys(("user", "item", "category"), SCALAR),
    "price": ("int", "float", "bool", "null"),
    "tags": ("text", "text list", "int list", "null"),
    "scene": ("text",),
    "click": ("int",),
}


@st.composite
def parquet_tables(draw: st.DrawFn) -> pl.DataFrame:
    """Each column of any parquet type, its values of that type or null; half the tables keep
    each column to a type its kind accepts, the label to 0/1 and the domain to two values, to get
    past the checks."""
    n = draw(st.integers(0, 60))
    clean = draw(st.booleans())
    columns = {}
    for name in COLUMNS:
        kind = draw(st.sampled_from(VALID.get(name, ()) if clean else sorted(DTYPES)))
        dtype, values = DTYPES[kind]
        if name == "click" and clean:
            dtype, values = pl.Int64, st.sampled_from([0, 1])
        elif name == "scene" and clean:
            dtype, values = pl.String, st.sampled_from("ab")
        cells = draw(
            st.lists(
                st.one_of(values, st.none()) if not clean or name != "click" else values,
                min_size=n,
                max_size=n,
            )
        )
        columns[name] = pl.Series(name, cells, dtype=dtype)
    return pl.DataFrame(columns)


@FUZZ
@given(frame=parquet_tables())
def test_any_parquet_encodes_in_range_or_fails_in_one_line(frame: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    frame.write_parquet(path)
    encodes_or_fails_in_one_line(path)


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**400), 10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    words,
    st.lists(st.one_of(words, st.integers(), st.none()), max_size=12),
)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Encoder:
    """Fitted on a clean table."""
    path = tmp_path_factory.mktemp("fuzz") / "clicks.parquet"
    click_table(rows=300).write_parquet(path)
    data = prepare(parse_experiment(table_config(path)).data)
    return Encoder.fit(data.train, data.schema)


@FUZZ
@given(
    records=st.lists(st.dictionaries(st.sampled_from(COLUMNS), values, max_size=8), min_size=1, max_size=8)
)
def test_any_records_encode_in_range_or_fail_in_one_line(records: list[dict], encoder: Encoder) -> None:
    try:
        in_range(encoder.transform_records(records), encoder)
    except InputError as err:
        one_line(err)
