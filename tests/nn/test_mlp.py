import pytest
import torch

from mdctr.nn.mlp import MLP, Dropout


def test_dropout_keeps_the_expected_fraction_and_the_mean() -> None:
    torch.manual_seed(0)
    layer = Dropout(0.2).train()
    x = torch.ones(1000, 500)
    out = layer(x)
    kept = (out != 0).float().mean().item()
    assert kept == pytest.approx(0.8, abs=0.003)
    assert out.mean().item() == pytest.approx(1.0, abs=0.005)
    assert torch.unique(out).tolist() == pytest.approx([0.0, 65536 / (65536 - 13107)])


def test_dropout_gradient_is_the_scaled_mask() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    out = Dropout(0.5).train()(x)
    out.sum().backward()
    mask = (out != 0).float()
    torch.testing.assert_close(x.grad, mask * 2.0)
    torch.testing.assert_close(out, x.detach() * mask * 2.0)


def test_dropout_is_reproduced_by_the_torch_seed_and_differs_per_call() -> None:
    layer = Dropout(0.3).train()
    x = torch.ones(8, 16)
    torch.manual_seed(5)
    first, second = layer(x), layer(x)
    torch.manual_seed(5)
    assert torch.equal(layer(x), first)
    assert not torch.equal(first, second)


def test_dropout_is_the_identity_in_eval_mode_and_at_zero() -> None:
    x = torch.randn(4, 3)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_dropout_refuses_a_probability_outside_0_1(p: float) -> None:
    with pytest.raises(ValueError, match=rf"dropout probability must be in \[0, 1\), got {p}"):
        Dropout(p)


def test_mlp_dropout_acts_only_in_training() -> None:
    torch.manual_seed(0)
    mlp = MLP(8, (16, 4), dropout=0.5)
    x = torch.randn(32, 8)
    assert not torch.equal(mlp.train()(x), mlp.train()(x))
    assert torch.equal(mlp.eval()(x), mlp.eval()(x))
