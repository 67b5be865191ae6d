"""Regression: values in the targets' own units (the head learns standardised values)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.nn import functional as F

from mtransfer.tasks.base import Task, register_task


@register_task
class Regression(Task):
    """One or more real-valued targets; the head's outputs are standardised with the training targets' statistics."""

    name = "regression"
    has_class_names = False
    metrics = ("mse", "mae", "r_squared")

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor, head: Any, mask: torch.Tensor | None = None) -> torch.Tensor:
        mean, std = head.target_mean.to(outputs.device), head.target_std.to(outputs.device)
        target = (labels.to(outputs.device).float().reshape(outputs.shape) - mean) / std
        return F.mse_loss(outputs.float(), target)

    def decisions(self, outputs: torch.Tensor, head: Any) -> torch.Tensor:
        return outputs.float() * head.target_std.to(outputs.device) + head.target_mean.to(outputs.device)

    def scores(self, outputs: torch.Tensor, head: Any) -> torch.Tensor:
        return self.decisions(outputs, head)

    def decode(self, decisions: Sequence[Any], label_names: Sequence[str]) -> list[Any]:
        return [row[0] if len(row) == 1 else row for row in decisions]
