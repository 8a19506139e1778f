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
