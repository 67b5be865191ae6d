"""Metrics through Hugging Face ``evaluate``, with the modules mtransfer needs shipped inside it.

``evaluate.load("accuracy")`` fetches the module from the Hub; offline it fails. The modules
in this folder (accuracy, f1, precision, recall, mse, mae, r_squared; wer and cer through
jiwer) load from the package
instead; any other name goes to ``evaluate.load`` as usual.

Classification metrics (f1, precision, recall) are macro-averaged over classes (over labels
for multi-label). Regression metrics average over targets.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SHIPPED = ("accuracy", "f1", "precision", "recall", "mse", "mae", "r_squared", "wer", "cer")
# Metrics where lower is better (for early stopping and best-model selection).
LOWER_IS_BETTER = {"loss", "mse", "mae", "rmse", "wer", "cer", "per"}
_MODULES = Path(__file__).parent


@functools.lru_cache(maxsize=None)
def load_metric(name: str, config_name: str | None = None):
    """An ``evaluate`` metric: shipped with mtransfer when it is one of :data:`SHIPPED`."""
    import evaluate

    if name in SHIPPED:
        return evaluate.load(str(_MODULES / name), config_name, keep_in_memory=True)
    try:
        return evaluate.load(name, config_name, keep_in_memory=True)
    except Exception as err:  # evaluate raises many types; all mean "not loadable"
        raise ValueError(
            f"Cannot load metric {name!r}: it is not shipped with mtransfer ({', '.join(SHIPPED)}) and evaluate "
            f"could not load it ({str(err).splitlines()[0] if str(err) else type(err).__name__})."
        ) from err


def compute_metrics(task: str, names: Sequence[str], predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """Compute ``names`` for a task's predictions.

    Args:
        task: A head task (``single_label_classification``, ...).
        names: Metric names (shipped or any ``evaluate`` metric).
        predictions: Class ids ``(n,)``, 0/1 indicators ``(n, labels)`` or values ``(n, targets)``.
        references: Same shape as ``predictions``.
    """
    out: dict[str, float] = {}
    predictions = np.asarray(predictions)
    references = np.asarray(references)
    for name in names:
        kwargs: dict[str, Any] = {}
        config = None
        preds, refs = predictions, references
        if task == "multi_label_classification":
            config = "multilabel"
            preds, refs = preds.astype(int).tolist(), refs.astype(int).tolist()
        elif task == "regression":
            preds, refs = preds.reshape(len(preds), -1), refs.reshape(len(refs), -1)
            if preds.shape[1] == 1:
                preds, refs = preds[:, 0].tolist(), refs[:, 0].tolist()
            else:
                config = "multilist"
                preds, refs = preds.tolist(), refs.tolist()
        else:
            preds, refs = preds.astype(int).tolist(), refs.astype(int).tolist()
        if name in ("f1", "precision", "recall"):
            kwargs["average"] = "macro"
        metric = load_metric(name, config if name in SHIPPED else None)
        result = metric.compute(predictions=preds, references=refs, **kwargs)
        for key, value in result.items():
            out[key if key == name or len(result) > 1 else name] = float(value) if np.ndim(value) == 0 else value
    return out


def greater_is_better(metric: str) -> bool:
    """Whether a higher value of ``metric`` (e.g. ``eval_accuracy``) is better."""
    base = metric.removeprefix("eval_")
    return base not in LOWER_IS_BETTER
