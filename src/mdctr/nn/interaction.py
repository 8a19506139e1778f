"""Feature-interaction layers."""

from __future__ import annotations

import torch
from torch import nn


class FactorizationMachine(nn.Module):
    """Second-order FM term over fields (B, F, dim) -> (B,): sum over pairs of <e_i, e_j>."""

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        square_of_sum = fields.sum(dim=1).pow(2)
        sum_of_square = fields.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)
