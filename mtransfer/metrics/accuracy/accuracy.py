"""Accuracy: the fraction of predictions equal to the references (subset accuracy for multi-label)."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = "Accuracy = correct predictions / all predictions. With config 'multilabel', a sample counts as correct only when every label matches."
_KWARGS = """
Args:
    predictions: predicted class ids (or 0/1 label lists with 'multilabel').
    references: true class ids (or 0/1 label lists with 'multilabel').
    normalize (bool): return the fraction (default) or the count of correct predictions.
    sample_weight (list of float): optional per-sample weights.
Returns:
    accuracy (float)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Accuracy(evaluate.Metric):
    def _info(self):
        if self.config_name == "multilabel":
            features = datasets.Features({"predictions": datasets.Sequence(datasets.Value("int32")),
                                          "references": datasets.Sequence(datasets.Value("int32"))})
        else:
            features = datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")})
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS, features=features)

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        return {"accuracy": float(accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight))}
