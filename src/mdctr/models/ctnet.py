"""CTNet (continual transfer learning, Taobao): a frozen source tower and a continually trained
target tower of the same architecture, joined by light adapters.

Written from the paper's description: the source model, trained for a long time on the large
domain(s) and still updated there, gives its hidden representations to the target model as
external knowledge; both keep their well-trained parameters, and only the target tower and the
adapters learn, from the target domain's incremental data. Here every hidden dense block of the
target (``*.layers.N`` of an MLP) adds ``adapter_l(s_l)``, where ``s_l`` is the output of the
source's block of the same name and the adapter is a gated linear unit
``(s W1 + b1) * sigmoid(s W2 + b2)``. ``W1`` and ``b1`` start at zero, so a CTNet starts exactly
as its target tower.
"""

from __future__ import annotations

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.errors import InputError
from mdctr.nn.mlp import DenseBlock


class GLUAdapter(nn.Module):
    """``(x W1 + b1) * sigmoid(x W2 + b2)``: (B, width_in) -> (B, width_out), zero at the start."""

    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.value = nn.Linear(width_in, width_out)
        self.gate = nn.Linear(width_in, width_out)
        nn.init.zeros_(self.value.weight)
        nn.init.zeros_(self.value.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value(x) * torch.sigmoid(self.gate(x))


def _blocks(model: nn.Module) -> dict[str, DenseBlock]:
    return {name: m for name, m in model.named_modules() if isinstance(m, DenseBlock)}


class CTNet(nn.Module):
    """``target(batch)`` with each hidden block's output plus its adapter's transform of the
    source's block of the same name; the source runs in eval mode and is never trained."""

    def __init__(self, source: nn.Module, target: nn.Module) -> None:
        super().__init__()
        self.source, self.target = source, target
        blocks = _blocks(target)
        if not blocks or set(blocks) != set(_blocks(source)):
            raise InputError(
                f"model.transfer: ctnet joins hidden dense layers; {type(target).__name__} has none "
                "(use a backbone with an MLP, e.g. dnn)"
            )
        self.names = list(blocks)
        widths = [
            next(m for m in blocks[n].modules() if isinstance(m, nn.Linear)).out_features for n in self.names
        ]
        self.adapters = nn.ModuleList(GLUAdapter(w, w) for w in widths)
        self.source.requires_grad_(False)
        self._source_out: dict[str, torch.Tensor] = {}
        sources = _blocks(source)
        for name, adapter in zip(self.names, self.adapters, strict=True):
            sources[name].register_forward_hook(self._keep(name))
            blocks[name].register_forward_hook(self._add(name, adapter))

    def _keep(self, name: str):  # noqa: ANN202 (a forward hook)
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            self._source_out[name] = output

        return hook

    def _add(self, name: str, adapter: GLUAdapter):  # noqa: ANN202 (a forward hook)
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
            source = self._source_out.pop(name, None)  # None: the target tower run on its own
            return output if source is None else output + adapter(source)

        return hook

    def frozen_parameters(self) -> list[nn.Parameter]:
        """The source tower: no recipe trains it."""
        return list(self.source.parameters())

    def train(self, mode: bool = True) -> CTNet:
        super().train(mode)
        self.source.eval()
        return self

    def forward(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            self.source(batch)
        return self.target(batch)
