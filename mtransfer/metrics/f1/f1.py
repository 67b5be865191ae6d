"""F1 = 2 * precision * recall / (precision + recall), averaged over classes as 'average' says."""

from sklearn.metrics import f1_score

from mtransfer.metrics import sklearn_metric


class F1(sklearn_metric.ClassificationScore):
    metric_name = "f1"
    description = "F1 = 2 * precision * recall / (precision + recall), averaged over classes as 'average' says."
    score_fn = f1_score
