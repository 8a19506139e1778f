import pytest
import torch

from mdctr.data.batch import Batch
from mdctr.data.schema import InputSpec
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.interaction import FactorizationMachine
from mdctr.nn.lookup import lookup
from mdctr.nn.mlp import MLP

SPEC = InputSpec(categorical=(5, 7), sequence=(6,), numeric=2, domains=3)


def batch() -> Batch:
    return Batch(
        sparse=torch.tensor([[2, 3], [4, 1], [1, 6]]),
        sequences=(torch.tensor([[2, 3, 0], [0, 0, 0], [5, 0, 0]]),),
        dense=torch.tensor([[0.5, -1.0], [0.0, 2.0], [1.0, 1.0]]),
        domain=torch.tensor([0, 2, 3]),  # 3 = unseen
    )


def test_fields_match_per_feature_lookups() -> None:
    torch.manual_seed(0)
    emb = FieldEmbedding(SPEC, dim=4, init_std=0.1)
    out = emb(batch())
    assert out.shape == (3, emb.num_fields, 4) and emb.num_fields == 6
    table = emb.categorical.weight
    torch.testing.assert_close(out[:, 0], table[torch.tensor([2, 4, 1])])
    torch.testing.assert_close(out[:, 1], table[5 + torch.tensor([3, 1, 6])])
    bag = emb.sequence[0].weight
    torch.testing.assert_close(out[:, 2], torch.stack([(bag[2] + bag[3]) / 2, torch.zeros(4), bag[5]]))
    torch.testing.assert_close(out[:, 3:5], batch().dense.unsqueeze(-1) * emb.numeric)
    torch.testing.assert_close(out[2, 5], torch.zeros(4))  # unseen domain -> zero vector
    assert out[1, 5].abs().sum() > 0


def test_unseen_domain_row_gets_no_gradient() -> None:
    emb = FieldEmbedding(SPEC, dim=4, init_std=0.1)
    emb(batch()).sum().backward()
    assert emb.domain.weight.grad[3].abs().sum() == 0
    assert emb.domain.weight.grad[0].abs().sum() > 0


def test_without_domain_field() -> None:
    emb = FieldEmbedding(SPEC, dim=4, domain_as_feature=False)
    assert emb(batch()).shape == (3, 5, 4) and emb.domain is None


def test_fm_equals_the_pairwise_sum() -> None:
    fields = torch.randn(5, 4, 3, dtype=torch.float64)
    brute = sum((fields[:, i] * fields[:, j]).sum(-1) for i in range(4) for j in range(i + 1, 4))
    torch.testing.assert_close(FactorizationMachine()(fields), brute)


def test_mlp_names_its_dense_layers() -> None:
    mlp = MLP(8, (4, 2), dropout=0.1, batch_norm=True)
    names = [n for n, m in mlp.named_modules() if isinstance(m, torch.nn.Linear)]
    assert names == ["layers.0.linear", "layers.1.linear"]
    assert mlp(torch.zeros(3, 8)).shape == (3, 2)


HASH_SPEC = InputSpec(categorical=(50, 70, 9), sequence=(), numeric=0, domains=2)


def all_ids_batch() -> Batch:
    ids = torch.stack([torch.arange(70) % size for size in HASH_SPEC.categorical], 1)
    return Batch(ids, (), torch.zeros(70, 0), torch.zeros(70, dtype=torch.long))


def test_unified_with_one_chunk_and_no_collisions_equals_plain_tables() -> None:
    torch.manual_seed(0)
    plain = FieldEmbedding(HASH_SPEC, 4, 0.1, domain_as_feature=False)
    unified = FieldEmbedding(HASH_SPEC, 4, 0.1, domain_as_feature=False, kind="unified", buckets=10_007)
    batch = all_ids_batch()
    rows = unified.hash(batch.sparse)[..., 0]  # (B, F)
    pairs = {(f, int(i)) for f in range(3) for i in batch.sparse[:, f]}
    hashed = {
        (f, int(i)): int(r) for f in range(3) for i, r in zip(batch.sparse[:, f], rows[:, f], strict=True)
    }
    assert len(set(hashed.values())) == len(pairs)  # no collisions among the ids used
    with torch.no_grad():
        for (f, i), r in hashed.items():
            unified.categorical.weight[r] = plain.categorical.weight[plain.offsets[f] + i]
    torch.testing.assert_close(unified(batch), plain(batch), atol=0, rtol=0)


def test_hashed_rows_stay_in_their_features_range() -> None:
    emb = FieldEmbedding(HASH_SPEC, 4, kind="hashed", buckets=16, domain_as_feature=False)
    rows = emb.hash(all_ids_batch().sparse)[..., 0]
    for f in range(3):
        assert rows[:, f].min() >= 16 * f and rows[:, f].max() < 16 * (f + 1)
    assert emb.categorical.weight.shape == (48, 4)


def test_unified_chunks_come_from_different_hashes() -> None:
    emb = FieldEmbedding(HASH_SPEC, 8, 0.1, domain_as_feature=False, kind="unified", buckets=101, chunks=4)
    batch = all_ids_batch()
    rows = emb.hash(batch.sparse)  # (B, F, 4)
    out = emb(batch)
    torch.testing.assert_close(out[5, 1, 2:4], emb.categorical.weight[rows[5, 1, 1]])
    assert emb.categorical.weight.shape == (101, 2)
    assert (rows[..., 0] != rows[..., 1]).float().mean() > 0.9


def test_hashing_is_the_same_in_another_process() -> None:
    import subprocess
    import sys

    code = (
        "import torch; from mdctr.nn.embedding import SaltedHash; "
        "h = SaltedHash(3, 2, 997, per_feature_rows=False); "
        "print(h(torch.arange(300).view(100, 3)).flatten().tolist())"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    from mdctr.nn.embedding import SaltedHash

    here = SaltedHash(3, 2, 997, per_feature_rows=False)(torch.arange(300).view(100, 3)).flatten().tolist()
    assert other.strip() == str(here)


@pytest.mark.parametrize("padding_idx", [None, 3])
def test_lookup_equals_nn_embedding_in_values_and_gradients(padding_idx: int | None) -> None:
    torch.manual_seed(0)
    table = torch.nn.Embedding(10, 4, padding_idx=padding_idx)
    rows = torch.randint(0, 10, (64, 5))
    rows[0, 0] = 3  # the padding row appears at least once
    grad = torch.randn(64, 5, 4)
    reference = torch.autograd.grad(table(rows), table.weight, grad)[0]
    out = lookup(table, rows)
    assert out.grad_fn is not None and "Lookup" in type(out.grad_fn).__name__
    assert torch.equal(out, table(rows))
    torch.testing.assert_close(torch.autograd.grad(out, table.weight, grad)[0], reference)
    if padding_idx is not None:
        assert torch.autograd.grad(lookup(table, rows), table.weight, grad)[0][padding_idx].abs().sum() == 0
    with torch.no_grad():
        assert lookup(table, rows).grad_fn is None
