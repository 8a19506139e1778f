import numpy as np
import torch

from mdctr.data.batch import Batch
from mdctr.data.loader import TensorData


def data(n: int, domains: int) -> TensorData:
    rows = TensorData.__new__(TensorData)  # rows without an encoded table
    rows.rank, rows.ranks = 0, 1
    gen = torch.Generator().manual_seed(1)
    rows.rows = Batch(
        torch.arange(n).view(-1, 1),
        (),
        torch.zeros(n, 0),
        torch.randint(0, domains + 1, (n,), generator=gen),
        torch.rand(n, 1, generator=gen),
    )
    return rows


def test_by_domain_sorts_inside_each_batch_and_keeps_the_shuffled_batches() -> None:
    rows = data(1000, 4)
    plain = list(rows.batches(64, torch.Generator().manual_seed(7)))
    by_domain = list(rows.batches(64, torch.Generator().manual_seed(7), by_domain=True))
    assert [len(b) for b in by_domain] == [len(b) for b in plain]
    for p, s in zip(plain, by_domain, strict=True):
        assert bool((s.domain[1:] >= s.domain[:-1]).all())
        assert sorted(p.sparse[:, 0].tolist()) == sorted(s.sparse[:, 0].tolist())
        ids = s.sparse[:, 0]
        assert torch.equal(s.domain, rows.rows.domain[ids])
        assert torch.equal(s.labels, rows.rows.labels[ids])
    assert not bool((torch.cat([b.domain for b in by_domain]).diff() >= 0).all())


def test_by_domain_without_shuffle_sorts_consecutive_rows() -> None:
    rows = data(130, 3)
    batches = list(rows.batches(50, by_domain=True))
    ids = [b.sparse[:, 0].numpy() for b in batches]
    np.testing.assert_array_equal(np.sort(np.concatenate(ids[:1])), np.arange(50))
    np.testing.assert_array_equal(np.sort(ids[2]), np.arange(100, 130))


def test_batch_index_by_slice_mask_and_positions_agree() -> None:
    rows = data(50, 3).rows
    positions = torch.tensor([3, 4, 5, 6])
    mask = torch.zeros(50, dtype=torch.bool)
    mask[3:7] = True
    for picked in (rows.index(slice(3, 7)), rows.index(mask), rows.index(positions)):
        assert torch.equal(picked.sparse[:, 0], positions)
        assert torch.equal(picked.domain, rows.domain[3:7])
        assert torch.equal(picked.labels, rows.labels[3:7])
        assert picked.dense.shape == (4, 0)
