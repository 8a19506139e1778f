"""train.precision = bf16: every model runs its training step under bfloat16 autocast."""

from pathlib import Path

import pytest
import torch

from mdctr.config import ModelConfig, parse_experiment
from mdctr.pipeline import train_experiment
from mdctr.registry import BACKBONES, MULTIDOMAIN, build_model
from mdctr.runs import read_config
from tests.models.test_family import SPEC, batch


def step(model: torch.nn.Module, bf16: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    b = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(b)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), b.labels[:, 0])
    loss.backward()
    return logits.float().detach(), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize(
    "cfg",
    [{"multidomain": m} for m in sorted(MULTIDOMAIN)] + [{"backbone": b} for b in sorted(BACKBONES)],
    ids=lambda c: next(iter(c.values())),
)
def test_bf16_step_is_close_to_float32_and_keeps_float32_weights(cfg: dict) -> None:
    torch.manual_seed(0)
    model = build_model(
        SPEC,
        ModelConfig(
            hidden=(16, 8), tower=(8,), dropout=0.0, embedding_init_std=0.1, lora={"reduce": 4}, **cfg
        ),
    ).eval()  # no dropout or batch statistics: the two passes see the same function
    full, full_grads = step(model, bf16=False)
    half, half_grads = step(model, bf16=True)
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half, full, atol=0.05, rtol=0.05)
    assert half_grads.keys() == full_grads.keys()
    for name, grad in half_grads.items():
        assert grad.dtype == torch.float32, name
        assert torch.isfinite(grad).all(), name
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_runs_the_dense_layers_in_bfloat16() -> None:
    model = build_model(SPEC, ModelConfig(hidden=(16, 8)))
    seen = []
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    first.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(batch())
    assert seen == [torch.bfloat16]


@pytest.mark.parametrize("name", ["none", "mlora"])
def test_bf16_training_learns_on_movielens_100k(name: str, tmp_path: Path) -> None:
    exp = parse_experiment(
        {
            "name": name,
            "data": {"task": "ml100k-gender"},
            "model": {"multidomain": name},
            "train": {"epochs": 3, "precision": "bf16"},
        }
    )
    result = train_experiment(exp, tmp_path / "run")
    assert result.metrics["domains"]["F"]["auc"] > 0.73
    assert result.metrics["domains"]["M"]["auc"] > 0.77
    assert read_config(tmp_path / "run").train.precision == "bf16"
