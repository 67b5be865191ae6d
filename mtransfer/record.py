"""The typed record of a training run (``metrics.json``): written by the trainer, read by every artifact.

The model card, the demo table and anything else that reports a run read this one dataclass,
so the file's layout is defined here and nowhere else.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

RECORD_FORMAT = 1
RECORD_FILE = "metrics.json"

# why a run's figures may not be trusted: flag -> (its name for people, what it means), as cards, reports and tables
# say it
RUN_FLAGS = {
    "all_blank": ("all-blank", "its hypotheses were (almost) all empty at the end (CTC's blank plateau); it never "
                               "learned to transcribe, so its error rates measure nothing but that"),
    "improving_at_cap": ("still improving at its epoch cap", "its last epoch was its best, so more epochs would likely "
                                                             "lower its error; its figures understate what it can reach"),
}


def describe_flags(flags: list[str]) -> list[str]:
    """The sentences of ``flags``, ``"<name>: <meaning>"`` (an unknown flag is shown as it is)."""
    return [": ".join(RUN_FLAGS[f]) if f in RUN_FLAGS else f for f in flags]


def describe_head_choice(choice: dict[str, Any]) -> str:
    """One line for terminals and cards: the head rate, and how it was chosen."""
    lr, wd = choice["learning_rate"], choice["weight_decay"]
    if not choice.get("searched"):
        return f"head learning rate {lr:g}, weight decay {wd:g} (the default: {choice.get('reason', 'no search')})"
    best = next((c for c in choice["candidates"] if c["learning_rate"] == lr and c["weight_decay"] == wd), {})
    return (f"head learning rate {lr:g}, weight decay {wd:g}: chosen among {len(choice['candidates'])} candidates "
            f"trained {choice['epochs']} epoch(s) on cached features, the lowest loss ({best.get('loss', float('nan')):.4f}; "
            f"{choice['metric']} {best.get('value', float('nan')):.4f}) on {choice['validation']} ({choice['seconds']:.1f}s)")


def mtransfer_version() -> str:
    """The installed mtransfer's version (``importlib.metadata``), as records, configs and cards state it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mtransfer")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


@dataclass
class BestEpoch:
    """The epoch that scored best on the evaluation data."""

    metric: str | None = None
    value: float | None = None
    epoch: int | None = None


@dataclass
class RunRecord:
    """What a training run did and measured.

    Attributes:
        args: The ``TrainingArguments`` as a dict.
        plan: The strategy's phases (``TrainingPlan.describe()``).
        layer_groups: Layer-group names, input side first, the head last.
        num_processes: Processes the run trained on.
        train_samples: Training examples.
        eval_samples: Evaluation (validation) examples; 0 without evaluation data.
        history: One dict per epoch (``epoch``, ``phase``, ``train_loss``, ``lr``, ``eval_*``, ``seconds``).
        best: The best epoch on the validation data (empty without it).
        final_eval: Validation metrics of the saved weights.
        weights_epoch: The epoch whose weights the saved model holds.
        weights_are_best: True when those are the best epoch's weights (``load_best_model_at_end``),
            False when they are the last epoch's.
        stopped_early: Early stopping ended the run.
        train_seconds: Wall time of the training loop.
        test: Test metrics when a test split was evaluated after training.
        flags: Why the run's figures may not be trusted (keys of :data:`RUN_FLAGS`): ``all_blank``,
            ``improving_at_cap``. Cards, reports and tables show them.
        batchnorm_stats: What the backbone's batch-norm statistics did (``frozen`` / ``update``), None
            without batch norm (``TrainingArguments.batchnorm_stats`` resolved).
        head_search: How the head-only phase's learning rate and weight decay were set when the user
            gave none (:class:`mtransfer.head_search.HeadSearch` as a dict: the choice, where it was
            validated, every candidate's score; ``searched`` False with the ``reason`` when the
            default was used); None when the user gave the rate or the plan has no head-only phase.
        linear_head: ``contrastive`` with its logistic head: the model fitted on the tuned features
            (``kind``, the cross-validated ``C``, ``fit_seconds``, ``train_examples``); else None.
        partial_cache: Per phase that trains the top of the backbone above frozen blocks
            (:mod:`mtransfer.partial_cache`): the ``block`` whose cached input it read and its
            ``megabytes``, or ``recomputed`` with the reason it ran the frozen blocks every epoch.
            Frozen layers run in evaluation mode (no dropout) either way. None when no phase could.
        batching: The training batches (``TrainingArguments.group_by_length`` resolved):
            ``group_by_length``, and when grouped the share of padded positions in the first epoch's
            batches (``padding``) against plain shuffled batches (``padding_random_batches``).
    """

    args: dict[str, Any]
    plan: list[dict[str, Any]]
    layer_groups: list[str]
    num_processes: int = 1
    train_samples: int = 0
    eval_samples: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: BestEpoch = field(default_factory=BestEpoch)
    final_eval: dict[str, float] = field(default_factory=dict)
    weights_epoch: int | None = None
    weights_are_best: bool = False
    stopped_early: bool = False
    train_seconds: float = 0.0
    test: dict[str, float] | None = None
    flags: list[str] = field(default_factory=list)
    batchnorm_stats: str | None = None
    head_search: dict[str, Any] | None = None
    linear_head: dict[str, Any] | None = None
    partial_cache: list[dict[str, Any]] | None = None
    batching: dict[str, Any] | None = None
    mtransfer_record: int = RECORD_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the record as JSON, atomically."""
        from mtransfer.atomic import atomic_write_json

        atomic_write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RunRecord:
        """Read a record written by :meth:`save`.

        Raises:
            FileNotFoundError: No such file.
            ValueError: Not JSON, or not a run record (names the missing keys).
        """
        from mtransfer.atomic import read_json

        path = Path(path)
        raw = read_json(path, "run record", f"expected the {RECORD_FILE} a training run writes in its output folder")
        names = {f.name for f in fields(cls)}
        missing = [k for k in ("args", "plan", "layer_groups") if k not in raw] if isinstance(raw, dict) else ["args"]
        if missing:
            raise ValueError(f"{path}: not a run record written by mtransfer's Trainer (missing {', '.join(missing)}).")
        values = {k: v for k, v in raw.items() if k in names}
        values["best"] = BestEpoch(**{k: v for k, v in (raw.get("best") or {}).items() if k in ("metric", "value", "epoch")})
        return cls(**values)
