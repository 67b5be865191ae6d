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


def as_python(score: Any) -> Any:
    """A scikit-learn score as a float, or a list of floats (per class or target)."""
    return score.tolist() if getattr(score, "ndim", 0) else float(score)


# the scikit-learn functions behind the shipped modules (``<name>/<name>.py``), and whether they average over
# classes (True), count (False) or score regression targets (None)
_SKLEARN_SCORES = {"accuracy": ("accuracy_score", False), "f1": ("f1_score", True), "precision": ("precision_score", True),
                   "recall": ("recall_score", True), "mse": ("mean_squared_error", None),
                   "mae": ("mean_absolute_error", None), "r_squared": ("r2_score", None)}


def shipped_score(name: str, predictions: Any, references: Any, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """What the shipped ``evaluate`` module ``name`` computes, by calling its scikit-learn function directly; None
    for other metrics. The same function with the same defaults on the same lists, so the same value, without
    importing ``evaluate`` (about 0.7 s in each process, on a run's first evaluation) or building its Arrow table
    (about 10 ms per call, every evaluation)."""
    if name not in _SKLEARN_SCORES:
        return None
    if name in _COUNTED and kwargs.get("average", "macro") == "macro" and _class_ids(predictions, references):
        return {name: _counted_score(name, np.asarray(predictions), np.asarray(references))}
    import sklearn.metrics  # about 0.7 s to import: single-label classification is counted above without it

    function, averaged = _SKLEARN_SCORES[name]
    score_fn = getattr(sklearn.metrics, function)
    if averaged is None:
        score = score_fn(references, predictions, multioutput=kwargs.get("multioutput", "uniform_average"))
    elif averaged:
        score = score_fn(references, predictions, **{"average": "binary", "pos_label": 1, "zero_division": 0, **kwargs})
    else:
        score = score_fn(references, predictions)
    return {name: as_python(score)}


_COUNTED = ("accuracy", "f1", "precision", "recall")


def _class_ids(predictions: Any, references: Any) -> bool:
    """Whether these are flat lists of class ids (single-label classification)."""
    return bool(len(predictions)) and not isinstance(predictions[0], (list, tuple, np.ndarray)) \
        and isinstance(predictions[0], (int, np.integer))


def _counted_score(name: str, predictions: np.ndarray, references: np.ndarray) -> float:
    """Accuracy, or the macro average over the classes present in either array of precision, recall or F1
    (0 where a ratio has no denominator): scikit-learn's formulas on the same counts, so the same floats."""
    if name == "accuracy":
        return float(np.mean(predictions == references))
    classes = np.union1d(references, predictions)
    hit = predictions == references
    tp = np.array([np.sum(hit & (references == c)) for c in classes], dtype=np.float64)
    predicted = np.array([np.sum(predictions == c) for c in classes], dtype=np.float64)
    actual = np.array([np.sum(references == c) for c in classes], dtype=np.float64)
    denominator = {"precision": predicted, "recall": actual, "f1": predicted + actual}[name]
    numerator = 2 * tp if name == "f1" else tp
    ratio = np.divide(numerator, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(np.mean(ratio))


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
        result = shipped_score(name, preds, refs, kwargs)
        if result is None:
            result = load_metric(name, config if name in SHIPPED else None).compute(predictions=preds, references=refs,
                                                                                   **kwargs)
        for key, value in result.items():
            out[key if key == name or len(result) > 1 else name] = float(value) if np.ndim(value) == 0 else value
    return out


def greater_is_better(metric: str) -> bool:
    """Whether a higher value of ``metric`` (e.g. ``eval_accuracy``) is better."""
    base = metric.removeprefix("eval_")
    return base not in LOWER_IS_BETTER
