from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mdctr.data.schema import Feature, Schema
from mdctr.data.table import check_table, domain_key, read_table, split
from mdctr.errors import InputError

SCHEMA = Schema(
    features=(
        Feature(name="item"),
        Feature(name="price", kind="numeric"),
        Feature(name="tags", kind="sequence"),
    ),
    domain=("scene",),
    labels=("click",),
)


def frame(**changes: object) -> pl.DataFrame:
    base = {
        "scene": ["a", "b", "a"],
        "item": [1, 2, 3],
        "price": [1.0, 2.0, 3.0],
        "tags": [["x"], [], ["y", "z"]],
        "click": [0, 1, 0],
    }
    base.update(changes)
    return pl.DataFrame(base)


def test_split_is_stratified_disjoint_complete_and_seeded() -> None:
    rng = np.random.default_rng(1)
    n = 10_000
    data = pl.DataFrame(
        {
            "scene": rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]),
            "click": (rng.random(n) < 0.2).astype(int),
            "row": np.arange(n),
        }
    )
    train, valid, test = split(data, SCHEMA, 0.2, 0.2, seed=2024)
    rows = [set(f["row"].to_list()) for f in (train, valid, test)]
    assert sum(map(len, rows)) == n and set.union(*rows) == set(range(n))
    for (scene, click), group in data.group_by(["scene", "click"]):
        size = group.height
        for part, share in zip((train, valid, test), (0.6, 0.2, 0.2), strict=True):
            got = part.filter((pl.col("scene") == scene) & (pl.col("click") == click)).height
            assert abs(got - share * size) <= 1
    again = split(data, SCHEMA, 0.2, 0.2, seed=2024)[0]
    assert again["row"].to_list() == train["row"].to_list()
    assert split(data, SCHEMA, 0.2, 0.2, seed=1)[0]["row"].to_list() != train["row"].to_list()


def test_several_domain_columns_join_into_one_key() -> None:
    data = pl.DataFrame({"a": ["x", "y"], "b": [1, None]})
    assert data.select(domain_key(("a", "b")))[:, 0].to_list() == ["x|1", "y|<null>"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"click": [0, None, 1]},
            "t.csv: label column 'click' has 1 missing/NaN values (first at row 1); drop or fill those rows",
        ),
        ({"click": [0.0, float("nan"), 1.0]}, "t.csv: label column 'click' has 1 missing/NaN values"),
        ({"click": [0, 2, 5]}, "t.csv: label column 'click' must be 0/1, found 2.0, 5.0; binarise it"),
        ({"click": ["no", "yes", "no"]}, "t.csv: label column 'click' must be numeric 0/1, found String"),
        (
            {"price": ["1", "2", "x"]},
            "t.csv: column 'price' is declared numeric but row 2 holds 'x'; fix the value or declare it "
            "kind: categorical",
        ),
        (
            {"price": [[1.0], [2.0], [3.0]]},
            "t.csv: column 'price' is declared numeric but holds List(Float64); cast it to "
            "numbers or declare it kind: categorical",
        ),
        ({"item": [[1], [2], [3]]}, "t.csv: column 'item' holds List(Int64); declare it kind: sequence"),
        ({"tags": [1, 2, 3]}, "t.csv: column 'tags' is declared sequence but holds Int64"),
    ],
)
def test_bad_columns_are_named(changes: dict, message: str) -> None:
    with pytest.raises(InputError) as err:
        check_table(frame(**changes), SCHEMA, "t.csv")
    assert str(err.value).startswith(message)


def test_misspelled_column_suggests_the_real_one() -> None:
    data = frame().rename({"price": "prices"})
    with pytest.raises(InputError) as err:
        check_table(data, SCHEMA, "t.csv")
    assert str(err.value) == "t.csv: column 'price' (numeric) not found; did you mean 'prices'?"


def test_read_table_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"data file .*none.csv not found; check the path"):
        read_table(tmp_path / "none.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match=r"empty.csv is empty; give a file with a header"):
        read_table(empty)
    header = tmp_path / "header.csv"
    header.write_text("a,b\n")
    with pytest.raises(InputError, match=r"header.csv has no rows"):
        read_table(header)
    other = tmp_path / "x.json"
    other.write_text("{}")
    with pytest.raises(InputError, match=r"unsupported file type '.json'; use .parquet or .csv"):
        read_table(other)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"broken.parquet: cannot read it"):
        read_table(broken)


def test_csv_id_columns_are_read_as_text_whatever_the_first_rows_look_like(tmp_path: Path) -> None:
    rows = 12_000  # past polars' schema inference window
    zips = ["48067"] * rows + ["07030", "55405-2546"]
    table = pl.DataFrame({"zip": zips, "price": [1.5] * len(zips), "click": [0, 1] * (len(zips) // 2)})
    path = tmp_path / "t.csv"
    table.write_csv(path)
    schema = Schema(
        features=(Feature(name="zip"), Feature(name="price", kind="numeric")),
        domain=("zip",),
        labels=("click",),
    )
    assert schema.id_columns == ("zip",)
    frame = read_table(path, schema.id_columns)
    assert frame.schema["zip"] == pl.String and frame.schema["price"] == pl.Float64
    assert frame["zip"].tail(2).to_list() == ["07030", "55405-2546"]
    with pytest.raises(InputError, match=r"t.csv: cannot read it \(could not parse `55405-2546`"):
        read_table(path)
