"""Sparse gradients and row-wise optimizers for big embedding tables."""

from pathlib import Path

import pytest
import torch

from mdctr.config import Experiment
from mdctr.optim import Optimizers, RowWiseAdagrad, mark_sparse, sparse_optimizer
from mdctr.pipeline import train_experiment

from .test_train import Interrupt, stop_after


def test_rowwise_adagrad_follows_its_rule_on_a_sparse_gradient_with_repeated_rows() -> None:
    torch.manual_seed(0)
    table = torch.nn.Embedding(6, 3, sparse=True)
    start = table.weight.detach().clone()
    optimizer = RowWiseAdagrad(table.parameters(), lr=0.1, eps=1e-8)
    ids, grads = [torch.tensor([1, 4, 1]), torch.tensor([4, 0])], []
    total = torch.zeros(6)
    expected = start.clone()
    for rows in ids:
        optimizer.zero_grad()
        out = table(rows)
        upstream = torch.randn_like(out)
        (out * upstream).sum().backward()
        grad = torch.zeros(6, 3).index_add_(0, rows, upstream)  # repeated rows summed
        touched = rows.unique()
        total[touched] += grad[touched].pow(2).mean(1)
        expected[touched] -= 0.1 * grad[touched] / (total[touched].sqrt() + 1e-8).unsqueeze(1)
        grads.append(grad)
        optimizer.step()
    torch.testing.assert_close(table.weight.detach(), expected)
    assert torch.equal(table.weight[[2, 3, 5]], start[[2, 3, 5]])  # rows never in a batch
    assert optimizer.state[table.weight]["sum"].shape == (6,)


@pytest.mark.parametrize("kind", ["rowwise_adagrad", "sparse_adam"])
def test_only_the_batchs_rows_move_and_the_rest_stay_bit_identical(kind: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(1000, 4), torch.nn.Linear(4, 1))
    big = mark_sparse(model, min_rows=500)
    assert big == [model[0].weight] and model[0].sparse
    optimizer = Optimizers([torch.optim.Adam(model[1].parameters()), sparse_optimizer(big, kind, 0.01)])
    before = model[0].weight.detach().clone()
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.tensor([3, 7, 7, 500])).sum().backward()
        assert model[0].weight.grad.is_sparse
        optimizer.step()
    moved = (model[0].weight.detach() != before).any(1).nonzero().flatten().tolist()
    assert moved == [3, 7, 500]
    assert len(optimizer.state_dict()) == 2


def test_small_tables_keep_dense_adam() -> None:
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4))
    assert mark_sparse(model, 11) == [] and not model[0].sparse
    assert mark_sparse(model, None) == []


def sparse_experiment(experiment: Experiment, optimizer: str) -> Experiment:
    train = experiment.train.model_copy(
        update={
            "sparse": experiment.train.sparse.model_copy(
                update={"min_rows": 100, "optimizer": optimizer, "lr": 0.01}
            )
        }
    )
    return experiment.model_copy(update={"train": train})


@pytest.mark.parametrize("optimizer", ["rowwise_adagrad", "sparse_adam"])
def test_sparse_tables_learn_and_resume_to_the_same_result(
    experiment: Experiment, tmp_path: Path, optimizer: str
) -> None:
    sparse = sparse_experiment(experiment, optimizer)
    whole = train_experiment(sparse, tmp_path / "whole")
    assert whole.metrics != train_experiment(experiment, tmp_path / "dense").metrics
    with pytest.raises(Interrupt):
        train_experiment(sparse, tmp_path / "cut", callbacks=[stop_after(1)])
    assert train_experiment(sparse, tmp_path / "cut", resume=True).metrics == whole.metrics
