import itertools

import torch

from mdctr.nn.interaction import FactorizationMachine


def test_fm_equals_the_sum_over_field_pairs() -> None:
    fields = torch.randn(5, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pairs = sum((fields[:, i] * fields[:, j]).sum(1) for i, j in itertools.combinations(range(4), 2))
    with torch.no_grad():
        torch.testing.assert_close(FactorizationMachine()(fields), pairs)
    torch.testing.assert_close(FactorizationMachine()(fields.requires_grad_()), pairs)


def test_fm_closed_form_gradient_matches_autograd() -> None:
    fields = torch.randn(6, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fields.requires_grad_()
    assert torch.autograd.gradcheck(FactorizationMachine(), (fields,))
    grad = torch.randn(6, dtype=torch.float64)
    ours = torch.autograd.grad(FactorizationMachine()(fields), fields, grad)[0]
    reference = torch.autograd.grad(0.5 * (fields.sum(1).pow(2) - fields.pow(2).sum(1)).sum(1), fields, grad)[
        0
    ]
    torch.testing.assert_close(ours, reference)
