"""MLoRA: any backbone made multi-domain by per-domain low-rank adapters on its dense layers."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.errors import InputError
from mdctr.models.protocols import Stage, shared_parameters
from mdctr.nn import native
from mdctr.nn.domain import DomainRouting
from mdctr.nn.lora import inject_lora, lora_layers


class MLoRA(nn.Module):
    """Wraps a backbone; adapters on every ``nn.Linear`` whose name matches ``targets``.

    Mixed-domain batches run in one pass (rows sorted by domain once, one merged-weight matmul
    per domain segment). Stages for ``two_stage``: the shared network with adapters off, then
    the adapters alone with ``A`` re-initialised and everything else frozen.
    """

    def __init__(self, backbone: nn.Module, domains: int, reduce: int, targets: tuple[str, ...]) -> None:
        super().__init__()
        self.backbone = backbone
        self.routing = DomainRouting(domains)
        linears = [n for n, m in backbone.named_modules() if isinstance(m, nn.Linear)]
        self.adapted = inject_lora(backbone, self.routing, targets, reduce)
        if not self.adapted:
            raise InputError(
                f"model.lora.targets {list(targets)} match no dense layer of "
                f"{type(backbone).__name__}; its layers are: {', '.join(linears)}"
            )
        native.segment_lora()  # loaded (or built) with the model, not inside the first training step

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.routing.run(batch, self.backbone)

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for layer in lora_layers(self) for p in layer.adapter_parameters()]

    def set_adapters(self, enabled: bool) -> None:
        self.routing.enabled = enabled

    def _enter_adapters(self) -> None:
        self.set_adapters(True)
        for layer in lora_layers(self):
            layer.reset_A()

    def training_stages(self) -> list[Stage]:
        return [
            Stage("shared", lambda: shared_parameters(self), lambda: self.set_adapters(False), adapter=False),
            Stage("adapters", self.adapter_parameters, self._enter_adapters),
        ]
