"""Incremental updates: vocabularies and domains grow with every old row bit-identical, weights
and optimizer state carry over, lineage is recorded, and a bad update leaves its parent as it was."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from mdctr import layout
from mdctr.cli import app
from mdctr.config import ModelConfig, parse_experiment
from mdctr.data.batch import Batch
from mdctr.data.encode import Encoder
from mdctr.data.schema import Feature, Schema
from mdctr.grow import grow_state, grown, row_maps
from mdctr.models.modula import ModulaLinear
from mdctr.nn.lora import DomainLoRALinear
from mdctr.pipeline import train_experiment
from mdctr.registry import BACKBONES, MULTIDOMAIN, build_model
from mdctr.runs import file_digest, load_run
from mdctr.train import Trainer

from .conftest import click_table, table_config

runner = CliRunner()

SCHEMA = Schema(  # c1 reads c0's vocabulary; the sequence has a table of its own
    features=(
        Feature(name="c0"),
        Feature(name="c1", vocab="c0"),
        Feature(name="c2"),
        Feature(name="s", kind="sequence", max_len=4),
        Feature(name="x", kind="numeric"),
    ),
    domain=("d",),
    labels=("y",),
)
CFG = dict(
    hidden=(16, 8), tower=(8,), dropout=0.0, embedding_init_std=0.1, mmoe={"experts": 3}, lora={"reduce": 4}
)


def encoders(shuffled: bool = False, shared: bool = True) -> tuple[Encoder, Encoder]:
    """An encoder and its growth: 7, 11 and 6 new values, a fourth domain; ``shuffled``: the
    new vocabularies hold the values in another order (as a CTNet target grown onto a source)."""
    schema = (
        SCHEMA
        if shared
        else SCHEMA.model_copy(
            update={"features": (*SCHEMA.features[:1], Feature(name="c1"), *SCHEMA.features[2:])}
        )
    )
    sizes, grow = {"c0": 18, "c1": 18, "c2": 28, "s": 8}, {"c0": 7, "c1": 7, "c2": 11, "s": 6}
    names = [v for v in sizes if schema.feature(v).vocabulary == v]
    old = {v: [f"{v}-{i}" for i in range(sizes[v])] for v in names}
    new = {v: old[v] + [f"{v}-{i}" for i in range(sizes[v], sizes[v] + grow[v])] for v in names}
    if shuffled:
        new = {v: values[::-1] for v, values in new.items()}
    scalers = {"x": (0.0, 1.0)}
    return Encoder(schema, old, scalers, ["p", "q", "r"]), Encoder(schema, new, scalers, ["p", "q", "r", "s"])


def old_rows(old: Encoder, n: int = 200) -> Batch:
    """Rows whose every id and domain the old encoder knows, unseen domain (3) included."""
    g = torch.Generator().manual_seed(5)
    spec = old.input_spec()
    return Batch(
        torch.stack([torch.randint(1, size, (n,), generator=g) for size in spec.categorical], 1),
        (torch.randint(0, spec.sequence[0], (n, 4), generator=g),),
        torch.randn(n, 1, generator=g),
        torch.randint(0, 4, (n,), generator=g),
    )


def in_new_ids(rows: Batch, old: Encoder, new: Encoder) -> Batch:
    """The same rows with every id as the new encoder numbers its value."""

    def ids(name: str, column: torch.Tensor) -> torch.Tensor:
        vocab = old.schema.feature(name).vocabulary
        where = {v: i for i, v in enumerate(new.vocabs[vocab], 2)}
        table = torch.tensor([0, 1, *(where[v] for v in old.vocabs[vocab])])
        return table[column]

    sparse = torch.stack([ids(name, rows.sparse[:, f]) for f, name in enumerate(old.categorical)], 1)
    return Batch(sparse, (ids("s", rows.sequences[0]),), rows.dense, rows.domain)


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter away from its initialisation (adapters that start at zero included)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, DomainLoRALinear):
                m.lora_B.normal_(0, 0.1)
            if isinstance(m, ModulaLinear):
                m.universal_B.normal_(0, 0.1)
    return model.eval()


STARTS_AS_UNSEEN = {"none", "mlora", "star", "pepnet"}  # the others give an unseen domain a mean of towers

CASES = (
    [(name, "dnn", {}) for name in sorted(MULTIDOMAIN)]
    + [("none", backbone, {}) for backbone in sorted(set(BACKBONES) - {"dnn"})]
    + [
        ("mlora", "dnn", {"optfs": {"search": True}}),
        ("none", "dnn", {"embedding": {"kind": "hashed", "buckets": 50}}),
        ("none", "dnn", {"shuffled": True}),
        ("mlora", "dnn", {"shuffled": True}),
    ]
)


@pytest.mark.parametrize(("multidomain", "backbone", "extra"), CASES, ids=lambda v: str(v) if v else "")
def test_growing_keeps_every_old_row_and_score(multidomain: str, backbone: str, extra: dict) -> None:
    extra = dict(extra)
    shuffled = extra.pop("shuffled", False)
    cfg = ModelConfig(multidomain=multidomain, backbone=backbone, **(CFG | extra))
    old, new = encoders(shuffled, shared=cfg.embedding.kind == "table")
    torch.manual_seed(0)
    parent = trained_like(build_model(old.input_spec(), cfg))
    torch.manual_seed(1)
    child = build_model(new.input_spec(), cfg).eval()
    grow_state(parent.state_dict(), child, old, new)
    maps = row_maps(child, old, new)
    for key, value in parent.state_dict().items():  # every old row, bit for bit
        target = child.state_dict()[key]
        if key in maps:
            assert torch.equal(target[maps[key][1]], value[maps[key][0]]), key
        else:
            assert torch.equal(target[: value.shape[0]] if value.dim() else target, value), key
    rows = old_rows(old)
    known, unseen = rows.index(rows.domain < 3), rows.index(rows.domain == 3)
    with torch.no_grad():
        # grouped towers run one matmul over all domains: its shape grew, so the last bits may move
        same = (
            torch.equal
            if multidomain in ("none", "mlora")
            else lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-7)
        )
        assert same(parent(known), child(in_new_ids(known, old, new)))
        if multidomain in STARTS_AS_UNSEEN:
            # a new domain starts as the parent's prediction for a domain it had not seen
            assert same(parent(unseen), child(in_new_ids(unseen, old, new)))


def test_fused_rows_move_with_their_feature_and_new_rows_keep_the_initialisation() -> None:
    cfg = ModelConfig(**CFG)
    old_encoder, new_encoder = encoders()
    torch.manual_seed(0)
    parent, child = build_model(old_encoder.input_spec(), cfg), build_model(new_encoder.input_spec(), cfg)
    fresh = child.state_dict()["embedding.categorical.weight"].clone()
    grow_state(parent.state_dict(), child, old_encoder, new_encoder)
    old, new = (
        parent.state_dict()["embedding.categorical.weight"],
        child.state_dict()["embedding.categorical.weight"],
    )  # rows: c0 (PAD, OOV, 18 values) then c2 (30 rows); c0 grows by 7
    assert torch.equal(new[:20], old[:20]) and torch.equal(new[27:57], old[20:50])
    assert torch.equal(new[20:27], fresh[20:27]) and torch.equal(new[57:], fresh[57:])
    other = Encoder(SCHEMA.model_copy(update={"features": SCHEMA.features[:3]}), {}, {}, [])
    with pytest.raises(ValueError, match="only their vocabularies may grow"):
        row_maps(child, old_encoder, other)
    fewer_domains = Encoder(SCHEMA, new_encoder.vocabs, new_encoder.scalers, ["q", "p", "r", "s"])
    with pytest.raises(ValueError, match="must come first"):
        row_maps(child, old_encoder, fewer_domains)
    plain_old, plain_shuffled = encoders(shared=False)[0], encoders(shuffled=True, shared=False)[1]
    hashed = build_model(
        plain_old.input_spec(), ModelConfig(**CFG, embedding={"kind": "unified", "buckets": 9})
    )
    with pytest.raises(ValueError, match="grow only by appending"):
        row_maps(hashed, plain_old, plain_shuffled)


def test_optimizer_state_carries_over_grown_like_the_weights(tmp_path: Path) -> None:
    experiment = parse_experiment(table_config(tmp_path / "unused.parquet", epochs=1))
    cfg = ModelConfig(**CFG)
    old, new = encoders()
    torch.manual_seed(0)
    parent = build_model(old.input_spec(), cfg)
    trainer = Trainer(parent, experiment.train, tmp_path)
    trainer._start_stage(trainer.stages[0])
    batch = old_rows(old, 64)
    batch.labels = torch.ones(64, 1)
    for _ in range(3):
        trainer.optimizer.zero_grad()
        trainer.objective(parent(batch), batch.labels).backward()
        trainer.optimizer.step()
    trainer._save_checkpoint()
    child = build_model(new.input_spec(), cfg)
    grow_state(parent.state_dict(), child, old, new)
    maps = row_maps(child, old, new)
    update = Trainer(child, experiment.train, None)
    update._start_stage(update.stages[0])
    carried = update.carry_optimizer(tmp_path / layout.CHECKPOINT, lambda k, o, n: grown(k, o, n, maps))
    assert carried == len(list(child.parameters()))
    before = trainer.optimizer.optimizers[0].state[parent.embedding.categorical.weight]
    after = update.optimizer.optimizers[0].state[child.embedding.categorical.weight]
    assert torch.equal(after["step"], before["step"])
    assert torch.equal(after["exp_avg"][27:57], before["exp_avg"][20:50])
    assert not after["exp_avg"][20:27].any()


def test_extending_an_encoder_appends_and_with_nothing_new_changes_nothing() -> None:
    schema = Schema(
        features=(Feature(name="u"), Feature(name="t", kind="sequence")), domain=("d",), labels=("y",)
    )
    old = pl.DataFrame(
        {"u": ["a", "b", "b"], "t": [["x"], ["y", "x"], []], "d": ["p", "q", "p"], "y": [0, 1, 0]}
    )
    new = pl.DataFrame(
        {"u": ["c", "a", "c"], "t": [["z"], ["x"], ["y"]], "d": ["r", "p", "p"], "y": [1, 0, 1]}
    )
    parent = Encoder.fit(old, schema)
    grown_encoder = parent.extended(Encoder.fit(new, schema))
    assert grown_encoder.vocabs == {"u": ["b", "a", "c"], "t": ["x", "y", "z"]}
    assert grown_encoder.domains == ["p", "q", "r"]
    assert parent.extended(Encoder.fit(old, schema)).to_dict() == parent.to_dict()
    capped = Schema(
        features=(Feature(name="u", max_vocab=2), Feature(name="t", kind="sequence")),
        domain=("d",),
        labels=("y",),
    )
    assert Encoder.fit(old, capped).extended(Encoder.fit(new, capped)).vocabs["u"] == ["b", "a"]


@pytest.fixture
def days(tmp_path: Path) -> Path:
    """Two days of a click log: day 2 brings new users, items and a new domain."""
    table = click_table(rows=6000)
    table[:3000].filter(pl.col("scene") != "d2").write_parquet(tmp_path / "day1.parquet")
    table[3000:].write_parquet(tmp_path / "day2.parquet")
    table[3000:].drop("price").write_parquet(tmp_path / "no-price.parquet")
    table[3000:].rename({"click": "buy"}).write_parquet(tmp_path / "buy.parquet")
    table[:0].write_parquet(tmp_path / "empty.parquet")
    tree = table_config(tmp_path / "day1.parquet", epochs=2)
    tree["model"]["multidomain"] = "mlora"
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(tree))
    result = runner.invoke(
        app, ["train", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "r1"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    return tmp_path


def _digests(run: Path) -> dict[str, str]:
    return {p.name: file_digest(p) for p in sorted(run.iterdir())}


def test_update_grows_the_run_and_records_its_lineage(days: Path) -> None:
    parent_files = _digests(days / "r1")
    for parent, child, data in (("r1", "r2", "day2"), ("r2", "r3", "day2")):
        result = runner.invoke(
            app,
            [
                "update",
                str(days / parent),
                "--data",
                str(days / f"{data}.parquet"),
                "--out",
                str(days / child),
                "--quiet",
            ],
        )
        assert result.exit_code == 0, result.output
    assert _digests(days / "r1") == parent_files
    r1, r2 = load_run(days / "r1"), load_run(days / "r2")
    for name, vocab in r1.encoder.vocabs.items():
        assert r2.encoder.vocabs[name][: len(vocab)] == vocab
    assert r2.encoder.domains == ["d0", "d1", "d2"] and len(r2.encoder.vocabs["user"]) > len(
        r1.encoder.vocabs["user"]
    )
    info = json.loads((days / "r3" / layout.INFO).read_text())
    assert [link["name"] for link in info["lineage"]] == ["tiny", "tiny+day2"]
    assert info["parent"]["model_sha256"] == r2.checksums[layout.BEST]
    assert info["grown"] == {"values": {"user": 0, "item": 0, "category": 0, "tags": 0}, "domains": []}
    first = json.loads((days / "r2" / layout.INFO).read_text())
    assert first["grown"]["domains"] == ["d2"] and first["grown"]["values"]["user"] > 0


def test_an_update_with_nothing_new_changes_nothing(days: Path) -> None:
    """The parent's own rows again, with steps too small to move a weight: every file that scores
    is the parent's, bit for bit."""
    args = ["--data", str(days / "day1.parquet"), "--set", "train.epochs=1", "--set", "train.lr=1e-12"]
    result = runner.invoke(app, ["update", str(days / "r1"), *args, "--out", str(days / "same"), "--quiet"])
    assert result.exit_code == 0, result.output
    parent, child = load_run(days / "r1"), load_run(days / "same")
    assert child.encoder.to_dict() == parent.encoder.to_dict()
    assert child.checksums[layout.BEST] == parent.checksums[layout.BEST]
    assert json.loads((days / "same" / layout.METRICS).read_text()) == json.loads(
        (days / "r1" / layout.METRICS).read_text()
    )
    assert json.loads((days / "same" / layout.INFO).read_text())["best_epoch"] == 0


def test_update_ends_no_worse_on_its_validation_rows_than_its_parent_started(days: Path, caplog) -> None:
    experiment = parse_experiment(
        table_config(days / "day2.parquet", epochs=1, lr=1.0)
        | {"model": load_run(days / "r1").experiment.model.model_dump(mode="json")}
    )
    with caplog.at_level("INFO"):
        result = train_experiment(experiment, days / "wild", init=days / "r1")
    start = next(r for r in caplog.records if r.getMessage().startswith("starting weights"))
    assert result.state.best_auc >= float(start.getMessage().split()[-1]) - 5e-5
    assert "optimizer state carried over" in caplog.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "no-price.parquet"], "price"),
        (["--data", "empty.parquet"], "empty"),
        (
            ["--data", "day2.parquet", "--set", "data.label=buy"],
            "data.label ['buy'] differs from the --init run's ['click']",
        ),
        (["--data", "day2.parquet", "--set", "model.hidden=[8]"], "the model section differs from"),
        (["--data", "day2.parquet", "--out", "r1"], "is the --init run"),
    ],
)
def test_a_bad_update_stops_with_one_line_and_leaves_the_parent_untouched(
    days: Path, args: list[str], message: str
) -> None:
    parent_files = _digests(days / "r1")
    args = [str(days / a) if a.endswith(".parquet") or a == "r1" else a for a in args]
    out = [] if "--out" in args else ["--out", str(days / "child")]
    result = runner.invoke(app, ["update", str(days / "r1"), *args, *out, "--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert _digests(days / "r1") == parent_files
    assert not (days / "child").exists()


def test_train_init_refuses_a_config_with_another_label_column(days: Path) -> None:
    tree = table_config(days / "buy.parquet", epochs=1)
    tree["data"]["label"] = "buy"
    tree["model"]["multidomain"] = "mlora"
    (days / "buy.yaml").write_text(yaml.safe_dump(tree))
    result = runner.invoke(
        app, ["train", str(days / "buy.yaml"), "--init", str(days / "r1"), "--out", str(days / "c")]
    )
    assert result.exit_code == 2 and "data.label ['buy'] differs" in result.output


def test_a_streamed_update_matches_the_in_memory_one(days: Path) -> None:
    table = pl.read_parquet(days / "day2.parquet")
    parts = {"train": table[:2000], "valid": table[2000:2500], "test": table[2500:]}
    for name, part in parts.items():
        (days / name).mkdir()
        part.write_parquet(days / name / "part-0.parquet")
    runs = {}
    for streaming in (True, False):
        out = days / f"s-{streaming}"
        args = ["--data", str(days / "train"), "--valid", str(days / "valid"), "--test", str(days / "test")]
        sets = ["--set", f"data.streaming={str(streaming).lower()}", "--set", "data.shuffle_buffer=100000"]
        result = runner.invoke(app, ["update", str(days / "r1"), *args, *sets, "--out", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        runs[streaming] = load_run(out)
    assert runs[True].encoder.to_dict() == runs[False].encoder.to_dict()


def test_an_adapter_update_changes_the_adapters_alone(days: Path) -> None:
    result = runner.invoke(
        app,
        ["update", str(days / "r1"), "--data", str(days / "day2.parquet"), "--out", str(days / "a")]
        + [
            "--set",
            "train.recipe=adapters",
            "--set",
            "train.epochs=1",
            "--set",
            "train.keep_parent=false",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    parent, child = load_run(days / "r1"), load_run(days / "a")
    adapters = {
        n for n, p in child.model.named_parameters() if any(p is a for a in child.model.adapter_parameters())
    }
    old = parent.model.state_dict()
    maps = row_maps(child.model, parent.encoder, child.encoder)
    changed = set()
    for key, value in child.model.state_dict().items():
        if grown(key, old[key], value, maps).ne(value).any():
            changed.add(key)
    assert changed and changed <= adapters


def test_an_adapter_update_with_tables_trains_the_embeddings_too(days: Path) -> None:
    sets = ["train.recipe=adapters", "train.adapter.tables=true", "train.epochs=1", "train.keep_parent=false"]
    args = ["--data", str(days / "day2.parquet"), "--out", str(days / "t"), "--quiet"]
    result = runner.invoke(app, ["update", str(days / "r1"), *args, *(x for k in sets for x in ("--set", k))])
    assert result.exit_code == 0, result.output
    parent, child = load_run(days / "r1"), load_run(days / "t")
    old, maps = parent.model.state_dict(), row_maps(child.model, parent.encoder, child.encoder)
    changed = {k for k, v in child.model.state_dict().items() if grown(k, old[k], v, maps).ne(v).any()}
    tables = {n for n, m in child.model.named_modules() if isinstance(m, torch.nn.Embedding)}
    adapters = {
        n for n, p in child.model.named_parameters() if any(p is a for a in child.model.adapter_parameters())
    }
    assert "backbone.embedding.categorical.weight" in changed
    assert changed <= adapters | {f"{t}.weight" for t in tables}


def test_the_adapter_recipe_needs_adapters(days: Path) -> None:
    tree = table_config(days / "day1.parquet", epochs=1, recipe="adapters")
    (days / "plain.yaml").write_text(yaml.safe_dump(tree))
    result = runner.invoke(app, ["train", str(days / "plain.yaml"), "--out", str(days / "p")])
    assert result.exit_code == 2 and "train.recipe 'adapters' needs a model with adapters" in result.output
