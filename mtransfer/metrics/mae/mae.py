"""Mean absolute error between predictions and references, for one target or, with config 'multilist', several per sample."""

import datasets
import evaluate
from sklearn.metrics import mean_absolute_error

_DESCRIPTION = "Mean absolute error between predictions and references."
_KWARGS = """
Args:
    predictions: predicted values (lists of values with config 'multilist').
    references: true values (lists of values with config 'multilist').
    sample_weight (list of float): optional per-sample weights.
    multioutput (str): 'uniform_average' (default), 'raw_values' or 'variance_weighted'.
Returns:
    mae (float, or a list with multioutput='raw_values')
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class MAE(evaluate.Metric):
    def _info(self):
        if self.config_name == "multilist":
            features = datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                          "references": datasets.Sequence(datasets.Value("float64"))})
        else:
            features = datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")})
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS, features=features)

    def _compute(self, predictions, references, sample_weight=None, multioutput="uniform_average"):
        score = mean_absolute_error(references, predictions, sample_weight=sample_weight, multioutput=multioutput)
        return {"mae": score.tolist() if getattr(score, "ndim", 0) else float(score)}
