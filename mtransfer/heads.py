"""Heads: pooled features -> logits or regression values, with their losses and predictions.

One :class:`Head` class serves every task; what its outputs mean (loss, decisions, scores) is the
task object's (:mod:`mtransfer.tasks`), named as in transformers' ``problem_type``:

* ``single_label_classification``: softmax over ``num_outputs`` classes, cross-entropy loss;
* ``multi_label_classification``: one sigmoid per label, binary cross-entropy, per-label
  decision thresholds (0.5 unless set or tuned on validation data);
* ``regression``: ``num_outputs`` targets, standardized with the training targets' mean and
  standard deviation for the loss, returned in the original units by :meth:`Head.predict`;
* ``ctc``: speech recognition; the head reads every frame (the adapter's ``Features.tokens``
  and ``mask``), ``num_outputs`` is the vocabulary size with the blank at id 0, and the loss is
  ``torch.nn.functional.ctc_loss`` (``zero_infinity``) with input lengths from the mask.

A head is linear (``hidden_sizes=()``) or an MLP (one hidden layer per entry of
``hidden_sizes``, each followed by the activation and dropout). It saves itself as
``config.json`` + ``model.safetensors``; its statistics and thresholds are buffers, so they
travel with the weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mtransfer.tasks import Task, get_task, task_names

TASKS = tuple(task_names())  # the task registry's names (mtransfer.tasks)
LABEL_PAD = -100  # padding of CTC label sequences (the transformers convention)
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


@dataclass
class HeadConfig:
    """Settings of a :class:`Head`.

    Attributes:
        task: One of ``single_label_classification``, ``multi_label_classification``,
            ``regression``.
        num_outputs: Classes, labels or regression targets.
        input_dim: Size of the pooled feature the adapter gives.
        hidden_sizes: Widths of the MLP's hidden layers; empty for a linear head.
        dropout: Dropout before each linear layer.
        activation: ``relu``, ``gelu``, ``tanh`` or ``silu``.
    """

    task: str = "single_label_classification"
    num_outputs: int = 2
    input_dim: int = 0
    hidden_sizes: list[int] = field(default_factory=list)
    dropout: float = 0.1
    activation: str = "gelu"

    def __post_init__(self) -> None:
        self.hidden_sizes = [int(h) for h in self.hidden_sizes]
        if self.task not in TASKS:
            raise ValueError(f"HeadConfig.task={self.task!r} is not a task; expected one of {', '.join(TASKS)}.")
        if self.num_outputs < 1:
            raise ValueError(f"HeadConfig.num_outputs must be >= 1, got {self.num_outputs}.")
        get_task(self.task).check_head(self)
        if self.input_dim < 1:
            raise ValueError(f"HeadConfig.input_dim must be the adapter's feature size (>= 1), got {self.input_dim}.")
        if any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"HeadConfig.hidden_sizes must be positive widths, got {self.hidden_sizes}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"HeadConfig.dropout must be in [0, 1), got {self.dropout}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"HeadConfig.activation={self.activation!r}; expected one of {', '.join(ACTIVATIONS)}.")


class Head(nn.Module):
    """Pooled features -> outputs, for classification, multi-label classification or regression.

    >>> head = Head(HeadConfig(task="regression", num_outputs=1, input_dim=8))
    >>> head.set_target_stats(torch.tensor([[100.0], [300.0]]))
    >>> head.predict(head(torch.zeros(2, 8))).shape
    torch.Size([2, 1])
    """

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.input_dim
        for hidden in config.hidden_sizes:
            layers += [nn.Dropout(config.dropout), nn.Linear(width, hidden), ACTIVATIONS[config.activation]()]
            width = hidden
        layers += [nn.Dropout(config.dropout)]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(width, config.num_outputs)
        n = config.num_outputs
        self.register_buffer("target_mean", torch.zeros(n))
        self.register_buffer("target_std", torch.ones(n))
        self.register_buffer("thresholds", torch.full((n,), 0.5))

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def kind(self) -> Task:
        """The task object that gives these outputs their meaning (loss, decisions, scores)."""
        return get_task(self.config.task)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (classification, CTC) or standardized values (regression).

        Shape:
            features: ``(batch, input_dim)``, or ``(batch, frames, input_dim)`` for CTC; returns
            ``(batch, num_outputs)`` or ``(batch, frames, num_outputs)``.
        """
        return self.out(self.body(features))

    # --- targets ------------------------------------------------------------------------
    def set_target_stats(self, targets: torch.Tensor) -> None:
        """Store the mean and std of regression targets (``(n, num_outputs)``)."""
        targets = targets.float().reshape(-1, self.config.num_outputs)
        std = targets.std(dim=0, unbiased=False) if len(targets) > 1 else torch.ones(self.config.num_outputs)
        self.target_mean.copy_(targets.mean(dim=0))
        self.target_std.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)))

    def set_thresholds(self, thresholds: torch.Tensor | float | list[float]) -> None:
        """Set the multi-label decision threshold(s), one per label or one for all."""
        t = torch.as_tensor(thresholds, dtype=torch.float32).expand(self.config.num_outputs)
        if ((t <= 0) | (t >= 1)).any():
            raise ValueError(f"Multi-label thresholds must lie in (0, 1), got {t.tolist()}.")
        self.thresholds.copy_(t)

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The task's loss.

        Shape:
            outputs: ``(batch, num_outputs)``, or ``(batch, frames, num_outputs)`` for CTC.
            labels: ``(batch,)`` class ids for single-label, ``(batch, num_outputs)`` 0/1 for
            multi-label, ``(batch, num_outputs)`` or ``(batch,)`` values in original units for
            regression, ``(batch, max_label_length)`` symbol ids padded with -100 for CTC.
            mask: ``(batch, frames)`` valid frames (CTC).
        """
        return self.kind.loss(outputs, labels, self, mask)

    @torch.no_grad()
    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """Decisions from :meth:`forward`'s outputs.

        Returns class ids ``(batch,)``, 0/1 label indicators ``(batch, num_outputs)`` (from the
        thresholds) or regression values in the targets' original units ``(batch, num_outputs)``.
        """
        return self.kind.decisions(outputs, self)

    @torch.no_grad()
    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities (softmax / sigmoid) or regression values in original units."""
        return self.kind.scores(outputs, self)

    def reset(self, num_outputs: int) -> Head:
        """A fresh head of the same shape with ``num_outputs`` outputs (timm's ``reset_classifier``)."""
        return Head(HeadConfig(**{**asdict(self.config), "num_outputs": num_outputs}))

    # --- persistence --------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(folder / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Head:
        folder = Path(folder)
        head = cls(HeadConfig(**json.loads((folder / "config.json").read_text())))
        head.load_state_dict(load_file(str(folder / "model.safetensors")))
        return head


def tune_thresholds(probs: torch.Tensor, labels: torch.Tensor, grid: int = 19) -> torch.Tensor:
    """Per-label thresholds that maximise each label's F1 on held-out data.

    Shape:
        probs: ``(n, num_labels)`` sigmoid outputs. labels: ``(n, num_labels)`` 0/1.
        Returns ``(num_labels,)``.
    """
    candidates = torch.linspace(0.05, 0.95, grid)
    labels = labels.bool()
    best = torch.full((probs.shape[1],), 0.5)
    best_f1 = torch.full((probs.shape[1],), -1.0)
    for t in candidates:
        pred = probs >= t
        tp = (pred & labels).sum(0).float()
        fp = (pred & ~labels).sum(0).float()
        fn = (~pred & labels).sum(0).float()
        f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
        better = f1 > best_f1
        best = torch.where(better, t, best)
        best_f1 = torch.where(better, f1, best_f1)
    return best


def folded_linear(head: Head, allow_hidden: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's output layer with regression statistics folded in: logits in the targets' units."""
    if head.config.hidden_sizes and not allow_hidden:
        raise ValueError("an MLP head has no transformers-native form (its hidden layers have no place in "
                         "the architecture's classifier); keep the mtransfer folder (TransferModel.from_pretrained).")
    weight = head.out.weight.detach().clone()
    bias = head.out.bias.detach().clone()
    if not head.kind.has_class_names:  # regression: the targets' statistics folded in
        weight = weight * head.target_std[:, None]
        bias = bias * head.target_std + head.target_mean
    return weight.to(torch.float32), bias.to(torch.float32)
