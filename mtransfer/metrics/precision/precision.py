"""Precision = true positives / predicted positives, averaged over classes as 'average' says."""

from sklearn.metrics import precision_score

from mtransfer.metrics import sklearn_metric


class Precision(sklearn_metric.ClassificationScore):
    metric_name = "precision"
    description = "Precision = true positives / predicted positives, averaged over classes as 'average' says."
    score_fn = precision_score
