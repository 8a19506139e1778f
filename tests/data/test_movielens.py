import zipfile
from pathlib import Path

import polars as pl
import pytest

from mdctr.data import movielens
from mdctr.errors import InputError


def write_wheel(path: Path) -> Path:
    prefix = movielens.SOURCES["movielens-1m"].prefix
    files = {
        "inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1m_1\tToy Story (1995)\t5\t978300760\n1m_2\tHeat (1995)\t3.0\t978300761\n",
        "user": "user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token\n"
        "1m_1\t1\tF\t10\t48067\n1m_2\t56.0\tM\t16.0\t70072\n",
        "item": "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"
        "Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy\nHeat (1995)\tHeat\t1995\tAction\n",
    }
    with zipfile.ZipFile(path, "w") as zf:
        for kind, text in files.items():
            zf.writestr(f"{prefix}.{kind}", text)
    return path


def test_read_wheel_joins_users_and_items(tmp_path: Path) -> None:
    table = movielens.read_wheel(write_wheel(tmp_path / "x.whl"), movielens.SOURCES["movielens-1m"])
    assert table.columns == list(movielens.COLUMNS)
    assert table.row(0) == (
        "1m_1",
        "Toy Story (1995)",
        5,
        978300760,
        "F",
        "1",
        "10",
        "48067",
        ["Animation", "Children's", "Comedy"],
    )
    assert table.row(1)[5:7] == ("56", "16")


def write_grouplens(folder: Path) -> Path:
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n2::1::2::978300761\n")
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (folder / "movies.dat").write_bytes(
        "1193::One Flew: Over (1975)::Drama\n1::Toy Story (1995)::Animation|Comedy\n".encode("latin-1")
    )
    return folder


def test_grouplens_folder_reads_like_the_wheel(tmp_path: Path) -> None:
    table = movielens.read_grouplens_ml1m(write_grouplens(tmp_path / "ml-1m"))
    assert table.columns == list(movielens.COLUMNS)
    assert table.row(0) == ("1", "1193", 5, 978300760, "F", "1", "10", "48067", ["Drama"])
    assert table["genres"][1].to_list() == ["Animation", "Comedy"]


def test_fetch_from_a_grouplens_folder_caches_parquet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MDCTR_CACHE", str(tmp_path / "cache"))
    path = movielens.fetch("movielens-1m", from_path=write_grouplens(tmp_path / "ml-1m"))
    assert path == tmp_path / "cache" / "movielens-1m" / "interactions.parquet"
    assert pl.read_parquet(path).height == 2
    assert not list(path.parent.glob("*.tmp"))


def test_fetch_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown dataset 'movielens-20m'; choose one of: movielens-100k"):
        movielens.fetch("movielens-20m")
    with pytest.raises(
        InputError, match=r"ratings.dat not found; point at the unzipped GroupLens ml-1m folder"
    ):
        movielens.fetch("movielens-1m", from_path=tmp_path)


def test_real_movielens_100k_from_the_recbole_wheel() -> None:
    table = movielens.load("movielens-100k")
    assert table.height == 100_000
    assert table["user_id"].n_unique() == 943 and table["item_id"].n_unique() == 1682
    assert table["gender"].unique().sort().to_list() == ["F", "M"]
    assert table.null_count().sum_horizontal().item() == 0
