"""Accuracy: correct predictions / all predictions; with config 'multilabel', a sample counts only when every label matches."""

from sklearn.metrics import accuracy_score

from mtransfer.metrics import sklearn_metric


class Accuracy(sklearn_metric.ClassificationScore):
    metric_name = "accuracy"
    description = "Accuracy: correct predictions / all predictions; with config 'multilabel', a sample counts only when every label matches."
    score_fn = accuracy_score
    averaged = False
