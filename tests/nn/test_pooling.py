import pytest
import torch

from mdctr.data.batch import Batch
from mdctr.data.schema import InputSpec
from mdctr.nn.embedding import FieldEmbedding
from mdctr.nn.pooling import MeanPooling


def bag_and_ids() -> tuple[torch.nn.EmbeddingBag, torch.Tensor]:
    torch.manual_seed(0)
    bag = torch.nn.EmbeddingBag(9, 4, mode="mean", padding_idx=0)
    ids = torch.randint(1, 9, (32, 5))
    ids[0] = 0  # an empty row: zeros, no gradient
    ids[1, 2:] = 0
    return bag, ids


def test_mean_pooling_equals_embedding_bag_from_vectors_and_from_the_table() -> None:
    bag, ids = bag_and_ids()
    pool = MeanPooling()
    vectors = torch.nn.functional.embedding(ids, bag.weight)
    torch.testing.assert_close(pool(vectors, ids != 0), bag(ids), atol=1e-7, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(pool.lookup(bag.weight, ids, 0), bag(ids))


def test_training_mean_lookup_has_the_embedding_bag_gradient() -> None:
    bag, ids = bag_and_ids()
    grad = torch.randn(32, 4)
    reference = torch.autograd.grad(bag(ids), bag.weight, grad)[0]
    out = MeanPooling().lookup(bag.weight, ids, 0)
    assert "BagMean" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, bag(ids))
    assert out[0].abs().sum() == 0
    torch.testing.assert_close(torch.autograd.grad(out, bag.weight, grad)[0], reference)


def test_a_pooling_layer_ends_up_exported_as_a_masked_mean() -> None:
    bag, ids = bag_and_ids()

    class Pool(torch.nn.Module):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return MeanPooling().lookup(bag.weight, ids, 0)

    program = torch.export.export(Pool(), (ids,))
    assert "embedding_bag" not in str(program.graph)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(ids), bag(ids), atol=1e-7, rtol=0)


SHARED = InputSpec(
    categorical=(6, 4), sequence=(6, 5), numeric=0, domains=2, owner=(0, 1, 0, 3), max_len=(3, 2)
)


def shared_batch() -> Batch:
    return Batch(
        torch.tensor([[2, 3], [5, 1]]),
        (torch.tensor([[2, 5, 0], [0, 0, 0]]), torch.tensor([[4, 1], [3, 0]])),
        torch.zeros(2, 0),
        torch.tensor([0, 1]),
    )


def test_a_sequence_sharing_a_categorical_vocabulary_reads_its_rows() -> None:
    torch.manual_seed(0)
    emb = FieldEmbedding(SHARED, dim=3, init_std=0.1, domain_as_feature=False)
    assert emb.categorical.num_embeddings == 6 + 4 and len(emb.sequence) == 1  # history: no table
    fields = emb(shared_batch())
    items = emb.categorical.weight[:6]
    torch.testing.assert_close(fields[0, 2], (items[2] + items[5]) / 2)
    assert fields[1, 2].abs().sum() == 0
    torch.testing.assert_close(fields[:, 0], items[torch.tensor([2, 5])])
    own = emb.sequence[0].weight
    torch.testing.assert_close(fields[:, 3], torch.stack([(own[4] + own[1]) / 2, own[3]]))
    fields.sum().backward()
    assert emb.categorical.weight.grad[[2, 5]].abs().sum() > 0


def test_pooling_none_leaves_the_sequence_to_the_model_unpooled() -> None:
    torch.manual_seed(0)
    emb = FieldEmbedding(SHARED, dim=3, init_std=0.1, domain_as_feature=False, pooling=(None, MeanPooling()))
    batch = shared_batch()
    assert emb.num_fields == 3 and emb(batch).shape == (2, 3, 3)
    history = emb.sequence_vectors(batch, 0)
    items = emb.categorical.weight[:6]
    assert history.shape == (2, 3, 3)
    torch.testing.assert_close(history[0, :2], items[torch.tensor([2, 5])])
    assert history[0, 2].abs().sum() == 0 and history[1].abs().sum() == 0
    assert batch.lengths(0).tolist() == [2, 0] and batch.mask(1).tolist() == [[True, True], [True, False]]


@pytest.mark.parametrize("kind", ["hashed", "unified"])
def test_hashed_tables_hash_a_shared_sequence_with_its_owners_salt(kind: str) -> None:
    torch.manual_seed(0)
    chunks = 1 if kind == "hashed" else 3
    spec = InputSpec(categorical=(6,), sequence=(6,), numeric=0, domains=2, owner=(0, 0), max_len=(3,))
    emb = FieldEmbedding(
        spec, dim=3, init_std=0.1, domain_as_feature=False, kind=kind, buckets=11, chunks=chunks
    )
    batch = Batch(
        torch.tensor([[2], [5]]),
        (torch.tensor([[5, 2, 0], [0, 0, 0]]),),
        torch.zeros(2, 0),
        torch.tensor([0, 1]),
    )
    fields = emb(batch)
    torch.testing.assert_close(
        fields[0, 1], (fields[0, 0] + fields[1, 0]) / 2
    )  # items 5 and 2, as rows 1 and 0
    assert fields[1, 1].abs().sum() == 0
