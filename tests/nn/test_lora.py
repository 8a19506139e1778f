import copy

import pytest
import torch

from mdctr.config import ModelConfig
from mdctr.data.batch import Batch
from mdctr.data.schema import InputSpec
from mdctr.errors import InputError
from mdctr.models.mlora import MLoRA
from mdctr.nn import native
from mdctr.nn.domain import DomainRouting, merge_domain
from mdctr.nn.lora import DomainLoRALinear, lora_layers, lora_rank
from mdctr.registry import BACKBONES

D = 3
SPEC = InputSpec(categorical=(20, 30), sequence=(10,), numeric=1, domains=D)
CFG = ModelConfig(hidden=(32, 16), dropout=0.0, embedding_init_std=0.1)


def mixed_batch(n: int = 200, domains: int = D + 1) -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(
        torch.stack([torch.randint(1, 20, (n,), generator=g), torch.randint(1, 30, (n,), generator=g)], 1),
        (torch.randint(0, 10, (n, 4), generator=g),),
        torch.randn(n, 1, generator=g),
        torch.randint(0, domains, (n,), generator=g),  # domain D = unseen
        torch.randint(0, 2, (n, 1), generator=g).float(),
    )


TARGETS = {"autoint": ("*attention.*.query",), "hiformer": ("*layers.*.key_up",)}
WITH_DENSE_LAYERS = sorted(b for b in BACKBONES if b not in ("lr", "fm"))


def wrapped(backbone: str = "dnn", reduce: int = 4) -> tuple[torch.nn.Module, MLoRA]:
    torch.manual_seed(0)
    base = BACKBONES[backbone](SPEC, CFG).eval()
    targets = TARGETS.get(backbone, ("*mlp.layers.*.linear",))
    return base, MLoRA(copy.deepcopy(base), D, reduce, targets).eval()


def require_kernels() -> None:
    """Where a C++ compiler is on PATH the kernels must build; elsewhere their tests skip."""
    if native.segment_lora() is None:
        if native.has_compiler():
            pytest.fail("a C++ compiler is here, yet mdctr's segment kernels did not build (see the log)")
        pytest.skip("no C++ compiler: the compiled kernels cannot be built here")


@pytest.fixture(params=["merged", "low_rank", "low_rank_compiled"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test on every segment path: merged weights, and per-segment low-rank matmuls from
    Python or from the compiled kernels."""
    monkeypatch.setattr(DomainLoRALinear, "merges", lambda _self, _x: request.param == "merged")
    if request.param == "low_rank_compiled":
        require_kernels()
    else:
        monkeypatch.setattr(native, "segment_lora", lambda: None)
    return request.param


def randomise_adapters(model: MLoRA) -> None:
    torch.manual_seed(5)
    with torch.no_grad():
        for layer in lora_layers(model):
            layer.lora_B.normal_(0, 0.3)
            layer.lora_bias.normal_(0, 0.3)


@pytest.mark.parametrize("backbone", WITH_DENSE_LAYERS)
def test_fresh_adapters_equal_the_base_exactly(backbone: str, path: str) -> None:
    base, model = wrapped(backbone)
    assert len(model.adapted) == (2 if backbone not in TARGETS else 3)
    batch = mixed_batch()
    assert torch.equal(model(batch), base(batch))


def test_rank_rule_and_shapes() -> None:
    _, model = wrapped(reduce=16)
    first, second = lora_layers(model)
    assert (first.rank, second.rank) == (lora_rank(32, 16), lora_rank(16, 16)) == (2, 1)
    assert first.lora_A.shape == (D, first.base_layer.in_features, 2)
    assert second.lora_B.shape == (D, 1, 16)


def test_mixed_batch_equals_each_domains_merged_model(path: str) -> None:
    _, model = wrapped()
    randomise_adapters(model)
    batch = mixed_batch()
    out = model(batch)
    for d in range(D + 1):
        rows = batch.domain == d
        plain = merge_domain(model.backbone, d)
        assert not any(isinstance(m, DomainLoRALinear) for m in plain.modules())
        torch.testing.assert_close(out[rows], plain(batch.index(rows)), atol=1e-5, rtol=0)


def test_unseen_domain_gets_the_shared_model(path: str) -> None:
    base, model = wrapped()
    randomise_adapters(model)
    batch = mixed_batch()
    unseen = batch.domain == D
    torch.testing.assert_close(model(batch)[unseen], base(batch)[unseen], atol=1e-6, rtol=0)
    assert not torch.allclose(model(batch)[~unseen], base(batch)[~unseen])


def test_traceable_path_equals_the_segment_path() -> None:
    _, model = wrapped()
    randomise_adapters(model)
    batch = mixed_batch()
    expected = model(batch)
    model.routing.domain = batch.domain  # domain set, no segments: the export path
    try:
        direct = model.backbone(batch)
    finally:
        model.routing.domain = None
    torch.testing.assert_close(direct, expected, atol=1e-5, rtol=0)


def test_a_domain_batch_moves_only_its_own_adapter(path: str) -> None:
    _, model = wrapped()
    randomise_adapters(model)
    model.train()
    batch = mixed_batch(domains=1)
    batch = Batch(batch.sparse, batch.sequences, batch.dense, torch.full_like(batch.domain, 1), batch.labels)
    torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.labels[:, 0]).backward()
    for layer in lora_layers(model):
        for param in (layer.lora_A, layer.lora_B, layer.lora_bias):
            assert param.grad[1].abs().sum() > 0
            assert param.grad[0].abs().sum() == 0 and param.grad[2].abs().sum() == 0


def test_merged_weights_while_they_cost_less_than_the_low_rank_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def layer(n_in: int, n_out: int, domains: int) -> DomainLoRALinear:
        return DomainLoRALinear(torch.nn.Linear(n_in, n_out), DomainRouting(domains), rank=n_out // 16)

    def batch(rows: int, n_in: int = 128) -> torch.Tensor:
        return torch.zeros(rows, n_in)

    monkeypatch.setattr(native, "segment_lora", lambda: None)  # the Python segment loop: c = 2/5
    assert layer(128, 256, 2).merges(batch(1024))  # 5 * 2 * 128 * 256 = 327,680 <= 2 * 1024 * 384 = 786,432
    assert not layer(128, 256, 2).merges(batch(400))
    assert not layer(128, 256, 7).merges(batch(1024))
    assert layer(128, 64, 7).merges(batch(1024))
    monkeypatch.setattr(native, "segment_lora", lambda: "compiled")  # compiled segments always win
    assert not layer(128, 256, 2).merges(batch(1024))
    assert layer(128, 256, 2).merges(batch(1024).double())  # float64 has no compiled kernels


def test_compiled_kernels_equal_the_python_segment_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    require_kernels()
    torch.manual_seed(3)
    routing = DomainRouting(4)
    layer = DomainLoRALinear(torch.nn.Linear(24, 40), routing, rank=5)
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.lora_bias.normal_()
    # domain 1 absent, 4 = unseen; at 2 threads (rows 0-149, 150-299) domain 2 spans both
    segments = [(0, 0, 7), (2, 7, 180), (3, 180, 181), (4, 181, 300)]
    x = torch.randn(300, 24)
    grad = torch.randn(300, 40)
    params = [layer.base_layer.weight, layer.base_layer.bias, layer.lora_A, layer.lora_B, layer.lora_bias]

    def run() -> list[torch.Tensor]:
        xs = x.clone().requires_grad_()
        for p in params:
            p.grad = None
        out = layer.forward_segments(xs, segments)
        out.backward(grad)
        return [out.detach(), xs.grad, *(p.grad for p in params)]

    monkeypatch.setattr(DomainLoRALinear, "merges", lambda _self, _x: False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        compiled = run()
    finally:
        torch.set_num_threads(threads)
    assert compiled[4].stride() == layer.lora_A.stride()  # A's gradient keeps A's (D, r, in) layout
    assert compiled[4][1].abs().sum() == 0 and compiled[5][1].abs().sum() == 0  # absent domain: no gradient
    monkeypatch.setattr(native, "segment_lora", lambda: None)
    for got, expected in zip(compiled, run(), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_targets_that_match_nothing_are_a_user_error() -> None:
    base = BACKBONES["dnn"](SPEC, CFG)
    with pytest.raises(
        InputError,
        match=r"model.lora.targets \['tower.\*'\] match no dense layer of DNN; "
        r"its layers are: mlp.layers.0.linear, mlp.layers.1.linear, head",
    ):
        MLoRA(base, D, 4, ("tower.*",))


def test_segment_backward_equals_autograd_of_the_traceable_path(path: str) -> None:
    _, model = wrapped()
    randomise_adapters(model)
    model = model.double()
    batch = mixed_batch()
    batch = Batch(batch.sparse, batch.sequences, batch.dense.double(), batch.domain, batch.labels.double())

    def grads(traceable: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        if traceable:
            order = torch.argsort(batch.domain, stable=True)
            sorted_batch = batch.index(order)
            model.routing.domain = sorted_batch.domain
            try:
                logits = torch.empty_like(sorted_batch.labels[:, 0]).index_copy_(
                    0, order, model.backbone(sorted_batch)
                )
            finally:
                model.routing.domain = None
        else:
            logits = model(batch)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels[:, 0]).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    fast, reference = grads(False), grads(True)
    for name in reference:
        torch.testing.assert_close(fast[name], reference[name], atol=1e-10, rtol=1e-8, msg=name)


def test_compiled_kernels_refuse_segments_and_shapes_that_do_not_fit() -> None:
    require_kernels()
    kernels = native.segment_lora()
    x, out = torch.randn(10, 6), torch.randn(10, 5)
    a_t, b, bias = torch.randn(2, 3, 6), torch.randn(2, 3, 5), torch.randn(2, 5)
    with pytest.raises(RuntimeError, match=r"segment \(1, 4, 11\) outside the batch's 10 rows"):
        kernels.forward(x, out, a_t, b, bias, [(0, 0, 4), (1, 4, 11)])
    with pytest.raises(RuntimeError, match="where"):
        kernels.forward(x, torch.randn(10, 4), a_t, b, bias, [(0, 0, 10)])
    with pytest.raises(RuntimeError, match="must be a contiguous float32 CPU tensor"):
        kernels.forward(x.double(), out, a_t, b, bias, [(0, 0, 10)])
