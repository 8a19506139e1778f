"""Predictor: a run directory alone scores raw rows; record encoding equals table encoding;
ONNX Runtime equals PyTorch; exported files are tied to their run."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from mdctr.cli import app
from mdctr.errors import InputError
from mdctr.predictor import Predictor
from mdctr.runs import load_run, write_checksums
from mdctr.weights import load_tensors, save_tensors

from .conftest import click_table

runner = CliRunner()


def raw_rows() -> pl.DataFrame:
    """Rows with unseen categories and domain, missing values and short/long tag lists."""
    frame = click_table(rows=300, seed=21).drop("click")
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) % 7 == 0)
        .then(pl.lit("brand-new"))
        .otherwise(pl.col("scene"))
        .alias("scene"),
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(None).otherwise(pl.col("price")).alias("price"),
        pl.when(pl.int_range(pl.len()) % 3 == 0)
        .then(pl.lit(["never-seen", "x", "y", "z", "w"]))
        .otherwise(pl.col("tags"))
        .alias("tags"),
        (pl.col("item") + pl.when(pl.int_range(pl.len()) % 4 == 0).then(10**6).otherwise(0)).alias("item"),
    )


def test_record_encoding_equals_table_encoding(mlora_run: Path) -> None:
    encoder = load_run(mlora_run).encoder
    frame = raw_rows()
    by_table = encoder.encode_table(frame, "rows", need_label=False)
    records = frame.to_dicts()
    for r in records[::2]:  # sequences may also come as text joined by the separator
        if r["tags"]:
            r["tags"] = "|".join(r["tags"])
    by_records = encoder.transform_records(records)
    np.testing.assert_array_equal(by_records.sparse, by_table.sparse)
    np.testing.assert_array_equal(by_records.sequences[0], by_table.sequences[0])
    np.testing.assert_allclose(by_records.dense, by_table.dense, rtol=1e-6)
    np.testing.assert_array_equal(by_records.domain, by_table.domain)
    assert (by_table.domain == len(encoder.domains)).sum() == 43  # the unseen "brand-new" rows
    assert (by_table.sparse[:, 1] == 1).sum() >= 75  # unseen items -> OOV


def test_missing_key_in_a_record_names_it(mlora_run: Path) -> None:
    encoder = load_run(mlora_run).encoder
    record = click_table(rows=2).to_dicts()[0]
    del record["price"]
    with pytest.raises(InputError, match=r"^row 0: feature 'price' is missing; every row needs"):
        encoder.transform_records([record])


def test_onnx_equals_torch_and_records_equal_frames(mlora_run: Path) -> None:
    frame = raw_rows()
    onnx = Predictor(mlora_run)
    torch_ = Predictor(mlora_run, backend="torch")
    a = onnx.predict_frame(frame)
    np.testing.assert_allclose(a, torch_.predict_frame(frame), atol=1e-5, rtol=0)
    np.testing.assert_allclose(onnx.predict_records(frame.to_dicts()), a, atol=1e-6, rtol=0)
    assert a.shape == (300,) and np.isfinite(a).all()
    meta = onnx.metadata()
    assert meta["domains"] == ["d0", "d1", "d2"] and meta["model"]["multidomain"] == "mlora"
    assert meta["metrics"]["wauc"] > 0.5 and meta["domain_columns"] == ["scene"]


def test_exported_file_is_used_and_checked(mlora_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(mlora_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "max |onnx - torch|" in result.stdout
    frame = raw_rows()
    np.testing.assert_array_equal(
        Predictor(mlora_run, onnx_path=out).predict_frame(frame), Predictor(mlora_run).predict_frame(frame)
    )
    merged = tmp_path / "d1.onnx"
    assert (
        runner.invoke(app, ["export", str(mlora_run), "--out", str(merged), "--domain", "d1"]).exit_code == 0
    )
    with pytest.raises(
        InputError, match=r"is merged for domain 'd1'; the Predictor needs the all-domain graph"
    ):
        Predictor(mlora_run, onnx_path=merged)
    other = tmp_path / "other"
    other.mkdir()
    for f in mlora_run.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    tensors, metadata = load_tensors(other / "model.safetensors")
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1.0
    save_tensors(other / "model.safetensors", tensors, metadata)
    write_checksums(other)  # another run, not a tampered one
    with pytest.raises(InputError, match=r"was not exported from .*other; export this run again"):
        Predictor(other, onnx_path=out)


def test_a_file_that_is_not_onnx_is_refused(mlora_run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match=r"model.onnx is not an ONNX model \(.*\); export it again"):
        Predictor(mlora_run, onnx_path=bad)
    with pytest.raises(InputError, match=r"ONNX file .*missing.onnx not found; create it with `mdctr export"):
        Predictor(mlora_run, onnx_path=tmp_path / "missing.onnx")
    with pytest.raises(InputError, match=r"backend 'tf' is unknown; use 'onnx' or 'torch'"):
        Predictor(mlora_run, backend="tf")  # type: ignore[arg-type]


def test_export_bad_domain_is_one_line(mlora_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["export", str(mlora_run), "--out", str(tmp_path / "m.onnx"), "--domain", "d9"]
    )
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == "error: --domain 'd9' is not a domain of this run; choose one of ['d0', 'd1', 'd2']"
    )
    assert not (tmp_path / "m.onnx").exists()
