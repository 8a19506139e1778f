"""MLoRA (Yang et al., RecSys 2024): per-domain low-rank adapters on dense layers.

For domain d: ``h = x W + b + (x A_d) B_d + b_d`` with ``A_d`` (in, r) random and ``B_d``
(r, out), ``b_d`` zero, so a freshly wrapped model equals its base. Adapters are attached
from outside by matching module names (like peft), so any backbone gets them unchanged.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from types import ModuleType

import torch
from torch import nn

from mdctr.nn import native
from mdctr.nn.domain import DomainLinear, DomainRouting, full_precision, replace_modules


def lora_rank(units: int, reduce: int) -> int:
    """The paper's rank rule: ``max(units // reduce, 1)``."""
    return max(units // reduce, 1)


def _kernels(x: torch.Tensor) -> ModuleType | None:
    """The compiled per-segment kernels where they apply to ``x`` (CPU, float32 once in the
    layer), else None."""
    return native.segment_lora() if x.device.type == "cpu" and x.dtype != torch.float64 else None


class SegmentLoRA(torch.autograd.Function):
    """``y = x W^T + b``, then ``y[a:b] += (x[a:b] A_d) B_d + b_d`` per segment ``(d, a, b)``.

    One full-batch matmul for the shared weight; the adapters cost ``B * r * (in + out)`` in
    small per-domain matmuls written in place (no concatenation, no per-domain autograd nodes):
    issued by the compiled kernels (``native.segment_lora``) where they are built, else from
    Python, at several times their arithmetic in dispatch. Segments of the unseen domain (d = D)
    get the shared output only.
    """

    @staticmethod
    @full_precision
    def forward(ctx, x, weight, bias, lora_a, lora_b, lora_bias, segments):  # noqa: ANN001, ANN205
        out = torch.addmm(bias, x, weight.T) if bias is not None else x @ weight.T
        kernels = _kernels(x)
        if kernels is not None:
            x = x.contiguous()
            a_t = lora_a.transpose(1, 2).contiguous()
            low = kernels.forward(x, out, a_t, lora_b.contiguous(), lora_bias.contiguous(), segments)
        else:
            low = x.new_empty(x.shape[0], lora_a.shape[-1])
            sizes = [b - a for _, a, b in segments]  # the segments tile the batch
            parts = zip(x.split(sizes), low.split(sizes), out.split(sizes), strict=True)
            a_d, b_d, bias_d = lora_a.unbind(), lora_b.unbind(), lora_bias.unbind()
            for (d, _, _), (xs, lows, outs) in zip(segments, parts, strict=True):
                if d < len(a_d):
                    torch.mm(xs, a_d[d], out=lows)
                    outs.addmm_(lows, b_d[d]).add_(bias_d[d])
        ctx.save_for_backward(x, weight, lora_a, lora_b, low)
        ctx.segments, ctx.kernels, ctx.has_bias = segments, kernels, bias is not None
        return out

    @staticmethod
    @full_precision
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, weight, lora_a, lora_b, low = ctx.saved_tensors
        grad = grad.contiguous()
        need = ctx.needs_input_grad
        grad_x = grad @ weight if need[0] else None
        grad_w = grad.T @ x if need[1] else None
        grad_bias = grad.sum(0) if need[2] and ctx.has_bias else None
        if ctx.kernels is not None:
            a_t, b = lora_a.transpose(1, 2).contiguous(), lora_b.contiguous()
            into = grad_x if grad_x is not None else grad.new_empty(0)  # empty: x needs no gradient
            grad_a_t, grad_b, grad_lb = ctx.kernels.backward(grad, x, low, into, a_t, b, ctx.segments)
            return grad_x, grad_w, grad_bias, grad_a_t.transpose(1, 2), grad_b, grad_lb, None
        grad_a, grad_b, grad_lb = (torch.zeros_like(t) for t in (lora_a, lora_b, lora_b[:, 0]))  # A's strides
        sizes = [b - a for _, a, b in ctx.segments]
        parts = zip(
            grad.split(sizes),
            x.split(sizes),
            low.split(sizes),
            grad_x.split(sizes) if grad_x is not None else [None] * len(sizes),
            strict=True,
        )
        a_d, b_d = lora_a.unbind(), lora_b.unbind()
        ga_d, gb_d, glb_d = grad_a.unbind(), grad_b.unbind(), grad_lb.unbind()
        for (d, _, _), (g, xs, lows, gxs) in zip(ctx.segments, parts, strict=True):
            if d >= len(a_d):
                continue
            torch.mm(lows.T, g, out=gb_d[d])
            torch.sum(g, 0, out=glb_d[d])
            g_low = g @ b_d[d].T
            torch.mm(g_low.T, xs, out=ga_d[d].T)
            if gxs is not None:
                gxs.addmm_(g_low, a_d[d].T)
        return grad_x, grad_w, grad_bias, grad_a, grad_b, grad_lb, None


class MergedLoRA(torch.autograd.Function):
    """``y[a:b] = x[a:b] W_d^T + b + b_d`` per segment ``(d, a, b)``, with every domain's merged
    weight ``W_d = W + (A_d B_d)^T`` formed once per call; the unseen domain (d = D) uses W, b.

    The adapters then cost ``D * r * in * out`` in three batched matmuls, independent of the
    batch, and each segment runs one full-width matmul per direction: about 3 ops per segment
    against SegmentLoRA's 8, at the price of splitting the layer's own matmuls by domain.
    """

    @staticmethod
    @full_precision
    def forward(ctx, x, weight, bias, lora_a, lora_b, lora_bias, segments):  # noqa: ANN001, ANN205
        d = lora_a.shape[0]
        # (D, out, in), laid out as nn.Linear stores its weight
        merged = torch.baddbmm(weight.expand(d, -1, -1), lora_b.transpose(1, 2), lora_a.transpose(1, 2))
        shared_bias = bias if bias is not None else lora_bias.new_zeros(weight.shape[0])
        biases = lora_bias + shared_bias
        out = x.new_empty(x.shape[0], weight.shape[0])
        sizes = [b - a for _, a, b in segments]  # the segments tile the batch
        weights, bias_d = [*merged.unbind(), weight], [*biases.unbind(), shared_bias]
        for (domain, _, _), xs, outs in zip(segments, x.split(sizes), out.split(sizes), strict=True):
            torch.addmm(bias_d[domain], xs, weights[domain].T, out=outs)
        ctx.save_for_backward(x, weight, merged, lora_a, lora_b)
        ctx.segments, ctx.sizes, ctx.has_bias = segments, sizes, bias is not None
        return out

    @staticmethod
    @full_precision
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, weight, merged, lora_a, lora_b = ctx.saved_tensors
        grad = grad.contiguous()
        need, d = ctx.needs_input_grad, lora_a.shape[0]
        grad_x = torch.empty_like(x) if need[0] else None
        grad_merged, grad_biases = merged.new_empty(merged.shape), grad.new_empty(d, merged.shape[1])
        absent = set(range(d))
        unseen_w, unseen_b = None, None
        sizes = ctx.sizes
        weights, grad_ws, grad_bs = [*merged.unbind(), weight], grad_merged.unbind(), grad_biases.unbind()
        grad_xs = grad_x.split(sizes) if grad_x is not None else [None] * len(sizes)
        for (domain, _, _), g, xs, gxs in zip(
            ctx.segments, grad.split(sizes), x.split(sizes), grad_xs, strict=True
        ):
            if gxs is not None:
                torch.mm(g, weights[domain], out=gxs)
            if domain < d:
                torch.mm(g.T, xs, out=grad_ws[domain])
                torch.sum(g, 0, out=grad_bs[domain])
                absent.discard(domain)
            else:
                unseen_w, unseen_b = g.T @ xs, g.sum(0)
        for domain in absent:
            grad_merged[domain].zero_()
            grad_biases[domain].zero_()
        grad_w = grad_merged.sum(0) if need[1] else None
        grad_bias = grad_biases.sum(0) if need[2] and ctx.has_bias else None
        if unseen_w is not None:
            grad_w = grad_w.add_(unseen_w) if grad_w is not None else None
            grad_bias = grad_bias.add_(unseen_b) if grad_bias is not None else None
        # W_d = W + B_d^T A_d^T, so dA_d^T = B_d dW_d and dB_d = A_d^T dW_d^T (A keeps its strides)
        grad_a = torch.bmm(lora_b, grad_merged).transpose(1, 2)
        grad_b = torch.bmm(lora_a.transpose(1, 2), grad_merged.transpose(1, 2))
        return grad_x, grad_w, grad_bias, grad_a, grad_b, grad_biases, None


class DomainLoRALinear(DomainLinear):
    """Wraps an ``nn.Linear`` (left untouched) with stacked per-domain adapters.

    Parameters: ``lora_A`` (D, in, r), ``lora_B`` (D, r, out), ``lora_bias`` (D, out).

    Example:
        >>> layer = DomainLoRALinear(nn.Linear(8, 4), DomainRouting(3), rank=2)
        >>> layer.lora_A.shape, layer.lora_B.shape
        (torch.Size([3, 8, 2]), torch.Size([3, 2, 4]))
    """

    def __init__(self, base_layer: nn.Linear, routing: DomainRouting, rank: int) -> None:
        super().__init__(base_layer, routing)
        d, n_in, n_out = routing.domains, base_layer.in_features, base_layer.out_features
        self.rank = rank
        # (D, in, r) stored as (D, r, in) in memory: x A_d and its gradient then run as BLAS's
        # transposed case, the faster one for small ranks
        self.lora_A = nn.Parameter(torch.empty(d, rank, n_in).transpose(1, 2))
        self.lora_B = nn.Parameter(torch.zeros(d, rank, n_out))
        self.lora_bias = nn.Parameter(torch.zeros(d, n_out))
        self.reset_A()

    def reset_A(self, domains: slice | None = None) -> None:
        """Fresh random ``A`` (as nn.Linear's init, fan-in = in); ``B`` and ``b_d`` untouched."""
        bound = 1 / math.sqrt(self.base_layer.in_features)
        with torch.no_grad():
            self.lora_A[domains or slice(None)].uniform_(-bound, bound)

    def delta_weights(self) -> torch.Tensor:
        """(D, in, out): ``A_d B_d`` for every domain."""
        return torch.bmm(self.lora_A, self.lora_B)

    def domain_weights(self) -> torch.Tensor:
        shared = self.base_layer.weight.T
        return torch.cat([shared + self.delta_weights(), shared.unsqueeze(0)])

    def domain_biases(self) -> torch.Tensor:
        shared = (
            self.base_layer.bias
            if self.base_layer.bias is not None
            else self.lora_bias.new_zeros(self.base_layer.out_features)
        )
        return torch.cat([shared + self.lora_bias, shared.unsqueeze(0)])

    def merges(self, x: torch.Tensor) -> bool:
        """Whether the batch ``x`` runs on merged weights (MergedLoRA) rather than per-segment
        low-rank products (SegmentLoRA): never with the compiled kernels; without them, while
        ``D * in * out <= 0.4 * rows * (in + out)`` (merging splits the layer's own matmuls by
        domain, which costs more as domains multiply; benchmarks/mlora_layers.py times both)."""
        if _kernels(x) is not None:
            return False
        n_out, n_in = self.base_layer.weight.shape
        return 5 * self.domains * n_in * n_out <= 2 * x.shape[0] * (n_in + n_out)

    def forward_segments(self, x: torch.Tensor, segments: list[tuple[int, int, int]]) -> torch.Tensor:
        base = self.base_layer
        function = MergedLoRA if self.merges(x) else SegmentLoRA
        return function.apply(x, base.weight, base.bias, self.lora_A, self.lora_B, self.lora_bias, segments)

    def forward_traceable(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """Low-rank masked path: ``x [A_1..A_D]`` (B, D*r), keep the row's block, times stacked B."""
        d, n_in, r = self.lora_A.shape
        low = x @ self.lora_A.permute(1, 0, 2).reshape(n_in, d * r)
        mask = torch.nn.functional.one_hot(domain, d + 1)[:, :d].to(x.dtype)
        low = (low.view(-1, d, r) * mask.unsqueeze(-1)).view(-1, d * r)
        return self.base_layer(x) + low @ self.lora_B.reshape(d * r, -1) + mask @ self.lora_bias

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [self.lora_A, self.lora_B, self.lora_bias]


def inject_lora(
    model: nn.Module,
    routing: DomainRouting,
    targets: tuple[str, ...],
    reduce: int,
    make: Callable[[nn.Linear, DomainRouting, int], nn.Module] = DomainLoRALinear,
) -> list[str]:
    """Wrap every ``nn.Linear`` whose name matches a glob in ``targets`` with ``make(linear, routing,
    rank)``; return the wrapped names."""

    def wrap(name: str, module: nn.Module) -> nn.Module | None:
        if isinstance(module, nn.Linear) and any(fnmatch.fnmatchcase(name, t) for t in targets):
            return make(module, routing, lora_rank(module.out_features, reduce))
        return None

    return replace_modules(model, wrap)


def lora_layers(model: nn.Module) -> list[DomainLoRALinear]:
    return [m for m in model.modules() if isinstance(m, DomainLoRALinear)]
