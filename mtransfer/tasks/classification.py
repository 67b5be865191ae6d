"""Single-label and multi-label classification."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.nn import functional as F

from mtransfer.tasks.base import Task, register_task


@register_task
class SingleLabelClassification(Task):
    """One class per input: cross-entropy, argmax decisions, softmax scores."""

    name = "single_label_classification"
    metrics = ("accuracy", "f1")

    def check_head(self, config: Any) -> None:
        if config.num_outputs < 2:
            raise ValueError(f"single_label_classification needs num_outputs >= 2 classes, got {config.num_outputs}.")

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor, head: Any, mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), labels.long())

    def decisions(self, outputs: torch.Tensor, head: Any) -> torch.Tensor:
        return outputs.argmax(dim=-1)

    def scores(self, outputs: torch.Tensor, head: Any) -> torch.Tensor:
        return torch.softmax(outputs.float(), dim=-1)

    def decode(self, decisions: Sequence[Any], label_names: Sequence[str]) -> list[Any]:
        return [label_names[i] for i in decisions]


@register_task
class MultiLabelClassification(Task):
    """Any number of labels per input: per-label sigmoids, thresholds (tunable) for decisions."""

    name = "multi_label_classification"
    multi_label = True
    metrics = ("f1", "accuracy")

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor, head: Any, mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs.float(), labels.to(outputs.device).float())

    def decisions(self, outputs: torch.Tensor, head: Any) -> torch.Tensor:
        # the outputs may sit on another device (gathered on the CPU)
        return (torch.sigmoid(outputs.float()) >= head.thresholds.to(outputs.device)).long()

    def scores(self, outputs: torch.Tensor, head: Any) -> torch.Tensor:
        return torch.sigmoid(outputs.float())

    def decode(self, decisions: Sequence[Any], label_names: Sequence[str]) -> list[Any]:
        return [[label_names[j] for j, on in enumerate(row) if on] for row in decisions]
