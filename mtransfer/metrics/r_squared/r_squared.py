"""Coefficient of determination R^2 (1 - residual sum of squares / total sum of squares), for one target or, with config 'multilist', several per sample."""

import datasets
import evaluate
from sklearn.metrics import r2_score

_DESCRIPTION = "Coefficient of determination R^2 (1 - residual sum of squares / total sum of squares)."
_KWARGS = """
Args:
    predictions: predicted values (lists of values with config 'multilist').
    references: true values (lists of values with config 'multilist').
    sample_weight (list of float): optional per-sample weights.
    multioutput (str): 'uniform_average' (default), 'raw_values' or 'variance_weighted'.
Returns:
    r_squared (float, or a list with multioutput='raw_values')
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class RSquared(evaluate.Metric):
    def _info(self):
        if self.config_name == "multilist":
            features = datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                          "references": datasets.Sequence(datasets.Value("float64"))})
        else:
            features = datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")})
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS, features=features)

    def _compute(self, predictions, references, sample_weight=None, multioutput="uniform_average"):
        score = r2_score(references, predictions, sample_weight=sample_weight, multioutput=multioutput)
        return {"r_squared": score.tolist() if getattr(score, "ndim", 0) else float(score)}
