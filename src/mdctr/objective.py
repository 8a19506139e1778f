"""The training objective: binary cross-entropy per task, plus the model's auxiliary losses."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mdctr.models.protocols import AuxiliaryLoss


class Objective:
    """``sum over tasks of mean BCE(logit_t, label_t) + sum of the auxiliary losses`` of
    ``model``'s modules (read after each training forward).

    logits (B,) for one task or (B, T); labels (B, T).
    """

    def __init__(self, model: nn.Module) -> None:
        self.auxiliary = [m for m in model.modules() if isinstance(m, AuxiliaryLoss)]

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.dim() == 1:
            loss = F.binary_cross_entropy_with_logits(logits, labels[:, 0])
        else:
            loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(0).sum()
        for module in self.auxiliary:
            loss = loss + module.extra_loss()
        return loss
