"""The task contract and its registry."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch

_TASKS: dict[str, Task] = {}


class Task:
    """What one task does with a head's outputs. Subclasses set the class attributes and override the methods.

    Attributes:
        name: The registry key (``HeadConfig.task``, ``--task``).
        has_class_names: Label names are classes that evaluation data must share (regression: the
            target names, which may differ).
        multi_label: Several labels per input (0/1 indicators, thresholds).
        reads_frames: The head reads every frame of the adapter's output (CTC), not the pooled vector.
        transcribes: Outputs decode to text (beam search, error rates, ``*ForCTC`` export).
        metrics: The metrics evaluation computes by default.
    """

    name: ClassVar[str]
    has_class_names: ClassVar[bool] = True
    multi_label: ClassVar[bool] = False
    reads_frames: ClassVar[bool] = False
    transcribes: ClassVar[bool] = False
    metrics: ClassVar[tuple[str, ...]] = ()

    def check_head(self, config: Any) -> None:
        """Raise a ``ValueError`` naming the field for head settings this task cannot take."""

    def labels(self, labels: Any) -> tuple[Any, list[str]]:
        """``(vocabulary or None, output names)`` from what a caller passes as ``labels`` (names or their number)."""
        if isinstance(labels, int):
            return None, [str(i) for i in range(labels)]
        return None, [str(x) for x in labels]

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor, head: Any, mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def decisions(self, outputs: torch.Tensor, head: Any) -> torch.Tensor:
        """Class ids, 0/1 indicators or values in the targets' units (see :meth:`mtransfer.heads.Head.predict`)."""
        raise NotImplementedError

    def scores(self, outputs: torch.Tensor, head: Any) -> torch.Tensor:
        """Probabilities (softmax / sigmoid) or values in the targets' units."""
        raise NotImplementedError

    def decode(self, decisions: Sequence[Any], label_names: Sequence[str]) -> list[Any]:
        """Predictions people read, from :meth:`decisions`' rows."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available by its ``name``; one name, one task."""
    if cls.name in _TASKS:
        raise ValueError(f"a task named {cls.name!r} is registered already ({_TASKS[cls.name]!r}).")
    _TASKS[cls.name] = cls()
    return cls


def get_task(name: str) -> Task:
    """The registered task ``name``, or a ``ValueError`` listing the tasks."""
    if name not in _TASKS:
        raise ValueError(f"task={name!r}; expected one of {', '.join(_TASKS)}.")
    return _TASKS[name]


def task_names() -> list[str]:
    """The registered task names, in registration order: the one list every entry point reads."""
    return list(_TASKS)
