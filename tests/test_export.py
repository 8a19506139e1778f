"""ONNX export: every model family equals eager PyTorch; merged per-domain graphs; the parity guard."""

import numpy as np
import pytest
import torch

from mdctr.config import ModelConfig
from mdctr.export import ExportError, export_model, random_rows, session
from mdctr.nn.lora import lora_layers
from mdctr.registry import BACKBONES, MULTIDOMAIN, build_model

from .models.test_family import CFG, SPEC, model_for

MAX_LEN = [4]


def onnx_scores(model_bytes: bytes, rows, with_domain: bool = True) -> np.ndarray:  # noqa: ANN001
    arrays = {
        "sparse": rows.sparse,
        "seq_tags": rows.sequences[0],
        "dense": rows.dense,
        "domain": rows.domain,
    }
    sess = session(model_bytes)
    names = [i.name for i in sess.get_inputs()]
    assert ("domain" in names) == with_domain
    return sess.run(["prob"], {n: arrays[n].numpy() for n in names})[0]


def eager(model: torch.nn.Module, rows) -> np.ndarray:  # noqa: ANN001
    with torch.no_grad():
        return torch.sigmoid(model.eval()(rows)).numpy()


@pytest.mark.parametrize("name", sorted(MULTIDOMAIN))
def test_onnx_equals_eager_for_every_family(name: str) -> None:
    model = model_for(name)
    exported = export_model(model, SPEC, ["tags"], MAX_LEN)
    assert exported.max_abs_diff <= 1e-5
    for n in (1, 300):  # batch sizes other than the traced one; rows include the unseen domain
        rows = random_rows(SPEC, MAX_LEN, n, seed=n)
        np.testing.assert_allclose(onnx_scores(exported.model, rows), eager(model, rows), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_exports_plain_and_with_mlora(backbone: str) -> None:
    targets = {
        "autoint": ("*attention.*.query",),
        "hiformer": ("*layers.*.key_up",),
        "lr": None,
        "fm": None,
    }.get(backbone, ("*mlp.layers.*.linear",))
    rows = random_rows(SPEC, MAX_LEN, 50, seed=4)
    for name in ("none", "mlora") if targets else ("none",):
        torch.manual_seed(0)
        extra = {"lora": {"targets": targets, "reduce": 4}} if name == "mlora" else {}
        model = build_model(SPEC, ModelConfig(backbone=backbone, multidomain=name, **{**CFG, **extra}))
        with torch.no_grad():  # adapters start at zero; make them matter
            for layer in lora_layers(model):
                layer.lora_B.normal_(0, 0.2)
        exported = export_model(model, SPEC, ["tags"], MAX_LEN)
        np.testing.assert_allclose(onnx_scores(exported.model, rows), eager(model, rows), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["mlora", "star", "modula_res"])
def test_merged_domain_graph_equals_the_model_on_that_domain(name: str) -> None:
    model = model_for(name)
    for d in range(SPEC.domains):
        exported = export_model(model, SPEC, ["tags"], MAX_LEN, domain=d)
        rows = random_rows(SPEC, MAX_LEN, 200, seed=d)
        rows.domain.fill_(d)
        np.testing.assert_allclose(
            onnx_scores(exported.model, rows, with_domain=False), eager(model, rows), atol=1e-5, rtol=0
        )


def test_merged_graph_has_no_adapter_computation() -> None:
    import onnx

    model = model_for("mlora")
    full = onnx.load_from_string(export_model(model, SPEC, ["tags"], MAX_LEN).model)
    merged = onnx.load_from_string(export_model(model, SPEC, ["tags"], MAX_LEN, domain=1).model)
    ops = [n.op_type for n in merged.graph.node]
    assert ops.count("MatMul") + ops.count("Gemm") < sum(
        n.op_type in ("MatMul", "Gemm") for n in full.graph.node
    )


class DriftsWhenExported(torch.nn.Module):
    """A model whose exported graph differs from eager: the parity check must catch it."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = model_for("none")

    def forward(self, batch):  # noqa: ANN001, ANN201
        out = self.inner(batch)
        return out + 0.1 if torch.compiler.is_exporting() else out


def test_parity_failure_is_loud() -> None:
    with pytest.raises(
        ExportError, match=r"ONNX export parity check failed: max \|onnx - torch\| = .* > 1e-05"
    ):
        export_model(DriftsWhenExported(), SPEC, ["tags"], MAX_LEN)


@pytest.mark.parametrize(
    "embedding", [{"kind": "hashed", "buckets": 7}, {"kind": "unified", "buckets": 13, "chunks": 2}]
)
def test_hashed_and_unified_embeddings_export(embedding: dict) -> None:
    torch.manual_seed(0)
    model = build_model(SPEC, ModelConfig(multidomain="mlora", embedding=embedding, **CFG))
    rows = random_rows(SPEC, MAX_LEN, 40, seed=2)
    exported = export_model(model, SPEC, ["tags"], MAX_LEN)
    np.testing.assert_allclose(onnx_scores(exported.model, rows), eager(model, rows), atol=1e-5, rtol=0)
