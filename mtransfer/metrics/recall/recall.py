"""Recall = true positives / actual positives, averaged over classes as 'average' says."""

from sklearn.metrics import recall_score

from mtransfer.metrics import sklearn_metric


class Recall(sklearn_metric.ClassificationScore):
    metric_name = "recall"
    description = "Recall = true positives / actual positives, averaged over classes as 'average' says."
    score_fn = recall_score
