"""MoDULA: a universal LoRA expert shared by all domains plus per-domain LoRA experts, mixed
by a per-domain router (or, in the Res variant, the domain expert added on top of the
universal one), trained in stages: shared network, universal expert, domain experts."""

from __future__ import annotations

import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.errors import InputError
from mdctr.models.protocols import Stage, shared_parameters
from mdctr.nn.domain import DomainLinear, DomainRouting
from mdctr.nn.lora import DomainLoRALinear, inject_lora


class ModulaLinear(DomainLoRALinear):
    """Domain d: ``W + g_u(d) A_u B_u + g_d(d) A_d B_d`` (router g = softmax per domain), or with
    ``residual`` ``W + A_u B_u + A_d B_d``. The unseen domain gets ``W + A_u B_u``."""

    def __init__(self, base_layer: nn.Linear, routing: DomainRouting, rank: int, residual: bool) -> None:
        super().__init__(base_layer, routing, rank)
        self.universal_A = nn.Parameter(torch.empty(base_layer.in_features, rank))
        self.universal_B = nn.Parameter(torch.zeros(rank, base_layer.out_features))
        self.router = None if residual else nn.Parameter(torch.zeros(routing.domains, 2))
        self.use_domain = True
        self.reset_universal()

    def reset_universal(self) -> None:
        bound = 1 / self.base_layer.in_features**0.5
        with torch.no_grad():
            self.universal_A.uniform_(-bound, bound)

    forward_segments = DomainLinear.forward_segments
    forward_traceable = DomainLinear.forward_traceable

    def domain_weights(self) -> torch.Tensor:
        shared = self.base_layer.weight.T
        universal = shared + self.universal_A @ self.universal_B
        if not self.use_domain:
            return universal.unsqueeze(0).expand(self.domains + 1, -1, -1)
        delta_u, delta_d = self.universal_A @ self.universal_B, self.delta_weights()
        if self.router is None:
            per_domain = shared + delta_u + delta_d
        else:
            g = torch.softmax(self.router, -1)
            per_domain = shared + g[:, :1, None] * delta_u + g[:, 1:, None] * delta_d
        return torch.cat([per_domain, universal.unsqueeze(0)])

    def domain_biases(self) -> torch.Tensor:
        shared = self.base_layer.bias
        own = shared + self.lora_bias if self.use_domain else shared.expand_as(self.lora_bias)
        return torch.cat([own, shared.unsqueeze(0)])

    def adapter_parameters(self) -> list[nn.Parameter]:
        own = [self.router] if self.router is not None else []
        return [*super().adapter_parameters(), self.universal_A, self.universal_B, *own]


class MoDULA(nn.Module):
    """A backbone whose dense layers matching ``targets`` become ModulaLinear layers."""

    def __init__(
        self, backbone: nn.Module, domains: int, reduce: int, targets: tuple[str, ...], residual: bool
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.routing = DomainRouting(domains)

        def make(linear: nn.Linear, routing: DomainRouting, rank: int) -> ModulaLinear:
            return ModulaLinear(linear, routing, rank, residual)

        if not inject_lora(backbone, self.routing, targets, reduce, make):
            raise InputError(
                f"model.lora.targets {list(targets)} match no dense layer of {type(backbone).__name__}"
            )

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.routing.run(batch, self.backbone)

    def _layers(self) -> list[ModulaLinear]:
        return [m for m in self.modules() if isinstance(m, ModulaLinear)]

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self._layers() for p in layer.adapter_parameters()]

    def set_adapters(self, enabled: bool) -> None:
        self._mode(enabled, True)

    def _universal_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self._layers() for p in (layer.universal_A, layer.universal_B)]

    def _domain_parameters(self) -> list[nn.Parameter]:
        return [
            p for layer in self._layers() for p in (layer.lora_A, layer.lora_B, layer.lora_bias, layer.router)
        ]

    def _mode(self, enabled: bool, use_domain: bool) -> None:
        self.routing.enabled = enabled
        for layer in self._layers():
            layer.use_domain = use_domain

    def _enter_universal(self) -> None:
        self._mode(True, False)
        for layer in self._layers():
            layer.reset_universal()

    def _enter_domain(self) -> None:
        self._mode(True, True)
        for layer in self._layers():
            layer.reset_A()

    def training_stages(self) -> list[Stage]:
        return [
            Stage("shared", lambda: shared_parameters(self), lambda: self._mode(False, True), adapter=False),
            Stage("universal", self._universal_parameters, self._enter_universal),
            Stage("domain", self._domain_parameters, self._enter_domain),
        ]
