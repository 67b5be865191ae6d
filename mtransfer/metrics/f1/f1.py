"""F1 for single-label (binary or multi-class) and, with config 'multilabel', multi-label classification."""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "F1 = 2 * precision * recall / (precision + recall). Averaged over classes as 'average' says (binary, macro, micro, weighted, or None for per-class values)."
_KWARGS = """
Args:
    predictions: predicted class ids (or 0/1 label lists with 'multilabel').
    references: true class ids (or 0/1 label lists with 'multilabel').
    average (str or None): 'binary' (default), 'macro', 'micro', 'weighted', 'samples' or None.
    labels (list of int): the classes to include.
    pos_label (int): the positive class with average='binary'.
    sample_weight (list of float): optional per-sample weights.
    zero_division: value when a ratio has no denominator (default 0).
Returns:
    f1 (float, or a list of floats with average=None)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class F1(evaluate.Metric):
    def _info(self):
        if self.config_name == "multilabel":
            features = datasets.Features({"predictions": datasets.Sequence(datasets.Value("int32")),
                                          "references": datasets.Sequence(datasets.Value("int32"))})
        else:
            features = datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")})
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS, features=features)

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None, zero_division=0):
        score = f1_score(references, predictions, labels=labels, pos_label=pos_label, average=average,
                        sample_weight=sample_weight, zero_division=zero_division)
        return {"f1": score.tolist() if hasattr(score, "tolist") and getattr(score, "ndim", 0) else float(score)}
