"""One MLoRA layer's forward + backward over a plain ``nn.Linear``, per path: merged weights,
per-segment low-rank products from Python, and the compiled kernels (``mdctr.nn.native``).

    python benchmarks/mlora_layers.py [--rounds 40] [--threads 2]

A 1,024-row batch in the 7 domain segments of an ml1m-age batch (30-360 rows), the three
layers of the benchmark DNN (rank = units // 16); the paths alternate in one process, and each
figure is the median over rounds. Prints a markdown table (idle machine).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from mdctr.nn import native
from mdctr.nn.domain import DomainRouting, domain_segments
from mdctr.nn.lora import DomainLoRALinear, MergedLoRA, SegmentLoRA

SIZES = (28, 185, 355, 202, 95, 99, 60)  # rows per domain, as in an ml1m-age batch
LAYERS = ((128, 256), (256, 128), (128, 64))


def path(
    function: type[torch.autograd.Function], kernels: object, inputs: tuple, grad: torch.Tensor
) -> Callable[[], None]:
    """One forward + backward of ``function`` with the compiled kernels on (``kernels``) or off."""

    def step() -> None:
        native.segment_lora = lambda: kernels
        function.apply(*inputs).backward(grad)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kernels = native.segment_lora()
    if kernels is None:
        raise SystemExit("the compiled kernels are not available here (see the warning above)")
    batch_segments = domain_segments(list(SIZES))
    rows = sum(SIZES)
    torch.manual_seed(0)
    print("| layer (rank) | plain µs | merged weights | per-segment from Python | compiled kernels |")
    print("|---|---|---|---|---|")
    for n_in, n_out in LAYERS:
        layer = DomainLoRALinear(nn.Linear(n_in, n_out), DomainRouting(len(SIZES)), rank=n_out // 16)
        with torch.no_grad():
            layer.lora_B.normal_()
            layer.lora_bias.normal_()
        base = layer.base_layer
        x = torch.randn(rows, n_in, requires_grad=True)
        grad = torch.randn(rows, n_out)
        inputs = (x, base.weight, base.bias, layer.lora_A, layer.lora_B, layer.lora_bias, batch_segments)

        paths = {
            "plain": lambda base=base, x=x, grad=grad: base(x).backward(grad),
            "merged": path(MergedLoRA, None, inputs, grad),
            "python": path(SegmentLoRA, None, inputs, grad),
            "compiled": path(SegmentLoRA, kernels, inputs, grad),
        }
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, step in paths.items():
                start = time.perf_counter()
                for _ in range(20):
                    step()
                times[name].append((time.perf_counter() - start) / 20 * 1e6)
        med = {name: statistics.median(t) for name, t in times.items()}
        extra = " | ".join(f"+{med[k] - med['plain']:,.0f}" for k in ("merged", "python", "compiled"))
        print(f"| {n_in}x{n_out} (r={n_out // 16}) | {med['plain']:,.0f} | {extra} |")


if __name__ == "__main__":
    main()
