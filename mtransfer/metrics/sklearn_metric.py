"""Base classes for the ``evaluate`` modules shipped in this folder, computed with scikit-learn.

Each module file (``f1/f1.py``...) subclasses one of these and names its scikit-learn
function; ``evaluate.load`` picks the subclass defined in the module file itself.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import datasets
import evaluate

from mtransfer.metrics import as_python

_CLASSIFICATION_ARGS = """
Args:
    predictions: predicted class ids (0/1 label lists with config 'multilabel').
    references: true class ids (0/1 label lists with config 'multilabel').
    sample_weight (list of float): optional per-sample weights.
{extra}Returns:
    {name} (float{returns})
"""
_AVERAGED_ARGS = """    average (str or None): 'binary' (default), 'macro', 'micro', 'weighted', 'samples' or None (per class).
    labels (list of int): the classes to include.
    pos_label (int): the positive class with average='binary'.
    zero_division: value when a ratio has no denominator (default 0).
"""
_REGRESSION_ARGS = """
Args:
    predictions: predicted values (lists of values with config 'multilist').
    references: true values (lists of values with config 'multilist').
    sample_weight (list of float): optional per-sample weights.
    multioutput (str): 'uniform_average' (default), 'raw_values' or 'variance_weighted'.
Returns:
    {name} (float, or a list with multioutput='raw_values')
"""




class _SklearnMetric(evaluate.Metric):
    metric_name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    score_fn: ClassVar[Callable[..., Any]]
    multi_config: ClassVar[str] = ""
    value_type: ClassVar[str] = ""

    def _inputs_description(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _info(self):
        value = datasets.Value(self.value_type)
        if self.config_name == self.multi_config:
            value = datasets.Sequence(value)
        return evaluate.MetricInfo(description=self.description, citation="", inputs_description=self._inputs_description(),
                                   features=datasets.Features({"predictions": value, "references": value}))


class ClassificationScore(_SklearnMetric):
    """A scikit-learn classification score; ``averaged`` scores take ``average`` and friends."""

    multi_config = "multilabel"
    value_type = "int32"
    averaged: ClassVar[bool] = True

    def _inputs_description(self) -> str:
        return _CLASSIFICATION_ARGS.format(name=self.metric_name, extra=_AVERAGED_ARGS if self.averaged else "",
                                           returns=", or a list of floats with average=None" if self.averaged else "")

    def _compute(self, predictions, references, sample_weight=None, **kwargs):
        if self.averaged:
            kwargs = {"average": "binary", "pos_label": 1, "zero_division": 0, **kwargs}
        return {self.metric_name: as_python(type(self).score_fn(references, predictions, sample_weight=sample_weight, **kwargs))}


class RegressionScore(_SklearnMetric):
    """A scikit-learn regression score over one or several targets."""

    multi_config = "multilist"
    value_type = "float64"

    def _inputs_description(self) -> str:
        return _REGRESSION_ARGS.format(name=self.metric_name)

    def _compute(self, predictions, references, sample_weight=None, multioutput="uniform_average"):
        score = type(self).score_fn(references, predictions, sample_weight=sample_weight, multioutput=multioutput)
        return {self.metric_name: as_python(score)}
