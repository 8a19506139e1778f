"""Routing rows to per-domain parameters inside a layer, for mixed-domain batches.

A multi-domain model sorts its batch by domain once (``DomainRouting.route``); every
domain-aware layer then reads the contiguous segments and runs one matmul per domain on a
row slice (a view, no copy) with that domain's *merged* weight. The cost is the base layer's
matmul plus a tiny weight merge, instead of a per-row gather of adapter matrices. Domain
index D (one past the last) is the unseen domain and always uses the shared weights.

A second, traceable path (used when exporting) needs no sorting: it masks per domain.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable

import torch
from torch import nn

from mdctr.data.batch import Batch


def domain_segments(counts: list[int]) -> list[tuple[int, int, int]]:
    """``(domain, start, stop)`` of each non-empty domain in a batch sorted by domain, from the
    rows per domain."""
    stops = itertools.accumulate(counts)
    return [(d, stop - n, stop) for d, (n, stop) in enumerate(zip(counts, stops, strict=True)) if n]


class DomainRouting:
    """Per-batch routing state shared by every domain-aware layer of one model.

    ``segments`` holds ``(domain, start, stop)`` for the sorted batch; ``domain`` the (B,)
    domain ids in batch order. ``enabled`` False makes every layer use its shared path.
    """

    def __init__(self, domains: int) -> None:
        self.domains = domains
        self.enabled = True
        self.domain: torch.Tensor | None = None
        self.segments: list[tuple[int, int, int]] | None = None

    def run(self, batch: Batch, forward: Callable[[Batch], torch.Tensor]) -> torch.Tensor:
        """Call ``forward`` on the batch sorted by domain; return logits in the caller's order."""
        domain = batch.domain
        tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
        order = None
        if not tracing:
            if domain.numel() > 1 and bool((domain[1:] < domain[:-1]).any()):
                order = torch.argsort(domain, stable=True)
                batch = batch.index(order)
                domain = batch.domain
            self.segments = domain_segments(torch.bincount(domain, minlength=self.domains + 1).tolist())
        self.domain = domain
        try:
            out = forward(batch)
        finally:
            self.domain, self.segments = None, None
        if order is None:
            return out
        return torch.empty_like(out).index_copy_(0, order, out)


def routes_by_domain(model: nn.Module) -> bool:
    """Whether any part of ``model`` routes rows by domain (and so runs faster on batches
    already sorted by domain)."""
    return any(isinstance(getattr(m, "routing", None), DomainRouting) for m in model.modules())


HALF = (torch.bfloat16, torch.float16)


def full_precision(function: Callable) -> Callable:
    """Run an autograd Function's forward or backward with autocast off and half-precision
    tensor arguments (an autocast layer's output) back in float32: its in-place and ``out=``
    matmuls need one dtype, and its many small matmuls are slower in bf16."""

    @functools.wraps(function)
    def wrapper(ctx, *args):  # noqa: ANN001, ANN002, ANN202
        device = next(a.device.type for a in args if isinstance(a, torch.Tensor))
        if not torch.is_autocast_enabled(device) and not any(
            isinstance(a, torch.Tensor) and a.dtype in HALF for a in args
        ):
            return function(ctx, *args)  # float32 already: skip the context
        args = [a.float() if isinstance(a, torch.Tensor) and a.dtype in HALF else a for a in args]
        with torch.autocast(device, enabled=False):
            return function(ctx, *args)

    return wrapper


class SegmentLinear(torch.autograd.Function):
    """``y[a:b] = x[a:b] @ W[d] + bias[d]`` for each segment ``(d, a, b)`` of a domain-sorted batch.

    Written as one autograd function so that neither direction concatenates or zero-fills
    per domain: outputs and input gradients are written in place into row slices. Under
    autocast it runs in float32 (``full_precision``).
    """

    @staticmethod
    @full_precision
    def forward(
        ctx,
        x: torch.Tensor,
        weights: torch.Tensor,
        biases: torch.Tensor,
        segments: list[tuple[int, int, int]],
    ) -> torch.Tensor:
        out = x.new_empty(x.shape[0], weights.shape[-1])
        for d, a, b in segments:
            torch.addmm(biases[d], x[a:b], weights[d], out=out[a:b])
        ctx.save_for_backward(x, weights)
        ctx.segments = segments
        return out

    @staticmethod
    @full_precision
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN205
        x, weights = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weights) if ctx.needs_input_grad[1] else None
        grad_b = grad.new_zeros(weights.shape[0], weights.shape[-1]) if ctx.needs_input_grad[2] else None
        for d, a, b in ctx.segments:
            g = grad[a:b]
            if grad_x is not None:
                torch.mm(g, weights[d].T, out=grad_x[a:b])
            if grad_w is not None:
                torch.mm(x[a:b].T, g, out=grad_w[d])
            if grad_b is not None:
                torch.sum(g, 0, out=grad_b[d])
        return grad_x, grad_w, grad_b, None


class DomainLinear(nn.Module):
    """A linear layer whose weight depends on the row's domain.

    Subclasses say how domain d's weight and bias derive from the shared ones
    (``domain_weights`` (D+1, in, out) and ``domain_biases`` (D+1, out), row D = shared).
    """

    def __init__(self, base_layer: nn.Linear, routing: DomainRouting) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.routing = routing

    @property
    def domains(self) -> int:
        return self.routing.domains

    def domain_weights(self) -> torch.Tensor:
        raise NotImplementedError

    def domain_biases(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, in), or (B, ..., in) where every position of row b belongs to b's domain
        (e.g. the fields of an attention layer)."""
        routing = self.routing
        if not routing.enabled or routing.domain is None:
            return self.base_layer(x)
        if x.dim() == 2:
            return self._rows(x, 1)
        inner = x[0].numel() // x.shape[-1]
        return self._rows(x.reshape(-1, x.shape[-1]), inner).view(*x.shape[:-1], -1)

    def _rows(self, x: torch.Tensor, inner: int) -> torch.Tensor:
        """x (B * inner, in): ``inner`` consecutive rows per batch row."""
        routing = self.routing
        if routing.segments is None:
            domain = routing.domain if inner == 1 else routing.domain.repeat_interleave(inner)
            return self.forward_traceable(x, domain)
        segments = (
            routing.segments if inner == 1 else [(d, a * inner, b * inner) for d, a, b in routing.segments]
        )
        return self.forward_segments(x, segments)

    def forward_segments(self, x: torch.Tensor, segments: list[tuple[int, int, int]]) -> torch.Tensor:
        """The domain-sorted path: one matmul per segment with that domain's merged weight."""
        return SegmentLinear.apply(x, self.domain_weights(), self.domain_biases(), segments)

    def forward_traceable(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """Same result without sorting: every domain's output, masked to its rows."""
        weights, biases = self.domain_weights(), self.domain_biases()
        outputs = torch.einsum("bi,dio->bdo", x, weights) + biases
        return outputs.gather(1, domain.view(-1, 1, 1).expand(-1, 1, outputs.shape[-1])).squeeze(1)

    def merged(self, domain: int) -> nn.Linear:
        """A plain nn.Linear equal to this layer on ``domain``'s rows (D = unseen: the shared one)."""
        base = self.base_layer
        linear = nn.Linear(base.in_features, base.out_features, bias=True)
        with torch.no_grad():
            linear.weight.copy_(self.domain_weights()[domain].T)
            linear.bias.copy_(self.domain_biases()[domain])
        return linear.to(base.weight.dtype)


def replace_modules(root: nn.Module, wrap: Callable[[str, nn.Module], nn.Module | None]) -> list[str]:
    """Replace every submodule for which ``wrap(name, module)`` returns a module; return their names."""
    replaced = []
    for name, module in list(root.named_modules()):
        new = wrap(name, module)
        if new is None or not name:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(root.get_submodule(parent_name) if parent_name else root, child, new)
        replaced.append(name)
    return replaced


def merge_domain(model: nn.Module, domain: int) -> nn.Module:
    """A copy of ``model`` with every DomainLinear replaced by its plain merged linear for
    ``domain``: one domain's model, for serving it (D = unseen gives the shared model)."""
    merged = copy.deepcopy(model)
    replace_modules(merged, lambda _n, m: m.merged(domain) if isinstance(m, DomainLinear) else None)
    return merged
