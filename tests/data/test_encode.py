from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mdctr.data.encode import OOV, PAD, Encoder
from mdctr.data.schema import Feature, Schema

SCHEMA = Schema(
    features=(
        Feature(name="item", min_count=2),
        Feature(name="price", kind="numeric"),
        Feature(name="tags", kind="sequence", max_len=2),
        Feature(name="words", kind="sequence", max_len=3, sep=";"),
    ),
    domain=("scene",),
    labels=("click",),
    user="who",
)


def frame(**changes: object) -> pl.DataFrame:
    base = {
        "scene": ["a", "b", "a", "a"],
        "item": [10, 11, 10, 12],
        "price": [1.0, 3.0, None, 4.0],
        "tags": [["x", "y", "z"], [], ["y"], None],
        "words": ["p;q", "q", "", "r;q;p;s"],
        "click": [0, 1, 0, 1],
        "who": ["u1", "u2", "u1", "u3"],
    }
    base.update(changes)
    return pl.DataFrame(base)


def test_vocab_round_trips_and_respects_min_count() -> None:
    train = frame(item=[10, 11, 10, 11])
    enc = Encoder.fit(train, SCHEMA)
    assert enc.vocabs["item"] == ["10", "11"]
    ids = enc.transform(train).sparse[:, 0]
    vocab = ["<pad>", "<oov>", *enc.vocabs["item"]]
    assert [vocab[i] for i in ids] == ["10", "11", "10", "11"]
    rare = Encoder.fit(frame(), SCHEMA)
    assert rare.vocabs["item"] == ["10"]  # 11 and 12 seen once, below min_count 2


def test_unseen_and_missing_values_map_to_oov_and_unseen_domain_to_d() -> None:
    enc = Encoder.fit(frame(), SCHEMA)
    new = frame(item=[99, None, 10, 10], tags=[["new"], ["x"], None, []], scene=["a", "zzz", "b", "a"])
    out = enc.transform(new)
    assert out.sparse[:, 0].tolist() == [OOV, OOV, 2, 2]
    assert out.sequences[0][0].tolist() == [OOV, PAD]
    assert out.sequences[0][2].tolist() == [PAD, PAD]
    assert out.domain.tolist() == [0, len(enc.domains), 1, 0]


def test_sequences_truncate_pad_and_split_text() -> None:
    enc = Encoder.fit(frame(), SCHEMA)
    out = enc.transform(frame())
    tags = ["<pad>", "<oov>", *enc.vocabs["tags"]]
    assert [[tags[i] for i in row] for row in out.sequences[0].tolist()] == [
        ["x", "y"],
        ["<pad>", "<pad>"],
        ["y", "<pad>"],
        ["<pad>", "<pad>"],
    ]
    words = ["<pad>", "<oov>", *enc.vocabs["words"]]
    assert [[words[i] for i in row] for row in out.sequences[1].tolist()] == [
        ["p", "q", "<pad>"],
        ["q", "<pad>", "<pad>"],
        ["", "<pad>", "<pad>"],
        ["r", "q", "p"],
    ]


def test_numeric_is_standardised_with_train_statistics_and_missing_gets_the_mean() -> None:
    enc = Encoder.fit(frame(), SCHEMA)
    values = np.array([1.0, 3.0, 4.0])
    mean, std = values.mean(), values.std(ddof=1)
    assert enc.scalers["price"] == pytest.approx((mean, std), rel=1e-15)
    out = enc.transform(frame())
    np.testing.assert_allclose(
        out.dense[:, 0], [(1 - mean) / std, (3 - mean) / std, 0.0, (4 - mean) / std], rtol=1e-6
    )


def test_label_user_and_save_load(tmp_path: Path) -> None:
    enc = Encoder.fit(frame(), SCHEMA)
    out = enc.transform(frame())
    assert out.labels.tolist() == [[0], [1], [0], [1]]
    users = out.user.tolist()  # group ids: equal exactly for equal users
    assert users[0] == users[2] and len({users[0], users[1], users[3]}) == 3
    enc.save(tmp_path / "vocab.json")
    again = Encoder.load(tmp_path / "vocab.json")
    assert again.to_dict() == enc.to_dict()
    np.testing.assert_array_equal(again.transform(frame()).sparse, out.sparse)
    assert again.input_spec() == enc.input_spec()
    assert enc.input_spec().categorical == (len(enc.vocabs["item"]) + 2,)


def test_records_match_the_table_for_every_value_type() -> None:
    roles = Schema(
        features=(
            Feature(name="flag"),
            Feature(name="size"),
            Feature(name="code"),
            Feature(name="price", kind="numeric", log1p=True),
            Feature(name="words", kind="sequence", max_len=3, sep=";"),
        ),
        domain=("scene", "market"),
        labels=("click",),
    )
    train = pl.DataFrame(
        {
            "scene": ["a", "b", "a", None],
            "market": [1, 1, 2, 2],
            "flag": [True, False, True, None],
            "size": [1.0, 2.5, 1.0, 3.0],
            "code": ["7", "07", "-3", "x"],
            "price": [1.0, -2.0, None, 40.0],
            "words": ["p;q", "7", "", "r;q;p;s"],
            "click": [0, 1, 0, 1],
        }
    )
    enc = Encoder.fit(train, roles)
    score = train.vstack(
        pl.DataFrame(
            {
                "scene": ["zz"], "market": [1], "flag": [None], "size": [9.0], "code": ["1"],
                "price": [float("nan")], "words": ["q;q;q;q"], "click": [0],
            },
            schema=train.schema,
        )
    )  # fmt: skip
    by_table = enc.transform(score)
    records = score.to_dicts()
    records[0]["code"] = 7  # the int finds the text "7", never "07"
    records[2]["code"] = -3
    by_records = enc.transform_records(records)
    np.testing.assert_array_equal(by_records.sparse, by_table.sparse)
    np.testing.assert_array_equal(by_records.sequences[0], by_table.sequences[0])
    np.testing.assert_allclose(by_records.dense, by_table.dense, rtol=1e-6)
    np.testing.assert_array_equal(by_records.domain, by_table.domain)
    assert enc.domains == ["<null>|2", "a|1", "a|2", "b|1"]
    assert by_table.domain.tolist() == [1, 3, 2, 0, 4]  # "zz|1" is unseen -> D


def test_max_vocab_keeps_the_most_frequent_values() -> None:
    schema = SCHEMA.model_copy(update={"features": (Feature(name="item", max_vocab=2),)})
    enc = Encoder.fit(frame(item=[12, 11, 12, 10], tags=[[], [], [], []]), schema)
    assert enc.vocabs["item"] == ["12", "10"]  # 12 twice, then the smaller text of the ties
    assert enc.transform(frame(item=[12, 11, 12, 10])).sparse[:, 0].tolist() == [2, OOV, 2, 3]


def test_a_shared_vocabulary_gives_one_id_per_value_across_features() -> None:
    schema = Schema(
        features=(
            Feature(name="item", min_count=2),
            Feature(name="history", kind="sequence", max_len=3, vocab="item"),
        ),
        domain=("scene",),
        labels=("click",),
    )
    table = pl.DataFrame(
        {
            "scene": ["a"] * 4,
            "item": ["x", "y", "z", "x"],
            "history": [["y"], ["x", "z"], ["w"], []],
            "click": [0, 1, 0, 1],
        }
    )
    enc = Encoder.fit(table, schema)
    assert list(enc.vocabs) == ["item"] and enc.vocabs["item"] == ["x", "y", "z"]  # w once: below min_count
    out = enc.transform(table)
    assert out.sparse[:, 0].tolist() == [2, 3, 4, 2]
    assert out.sequences[0].tolist() == [[3, PAD, PAD], [2, 4, PAD], [OOV, PAD, PAD], [PAD, PAD, PAD]]
    spec = enc.input_spec()
    assert spec.categorical == spec.sequence == (5,) and spec.owner == (0, 0) and spec.max_len == (3,)
    records = enc.transform_records([{"scene": "a", "item": "z", "history": ["x", "w"]}])
    assert records.sparse.tolist() == [[4]] and records.sequences[0].tolist() == [[2, OOV, PAD]]
    assert Encoder.from_dict(enc.to_dict()).to_dict() == enc.to_dict()


def test_the_schema_refuses_inconsistent_roles() -> None:
    item = Feature(name="item")
    with pytest.raises(ValueError, match="feature 'item' is declared twice"):
        Schema(features=(item, item), domain=("scene",), labels=("click",))
    with pytest.raises(ValueError, match="column 'click' is both a feature and a label"):
        Schema(features=(item, Feature(name="click")), domain=("scene",), labels=("click",))
    with pytest.raises(ValueError, match="vocab 'price' is not a categorical or sequence feature"):
        Schema(
            features=(
                Feature(name="price", kind="numeric"),
                Feature(name="h", kind="sequence", vocab="price"),
            ),
            domain=("scene",),
            labels=("click",),
        )
    with pytest.raises(ValueError, match="vocab 'b' shares another vocabulary itself; point at 'item'"):
        Schema(
            features=(item, Feature(name="b", vocab="item"), Feature(name="c", vocab="b")),
            domain=("scene",),
            labels=("click",),
        )
    assert Schema(features=(item,), domain=("item",), labels=("click",)).id_columns == (
        "item",
    )  # domain may be a feature
