"""Coefficient of determination R^2: 1 - residual sum of squares / total sum of squares."""

from sklearn.metrics import r2_score

from mtransfer.metrics import sklearn_metric


class RSquared(sklearn_metric.RegressionScore):
    metric_name = "r_squared"
    description = "Coefficient of determination R^2: 1 - residual sum of squares / total sum of squares."
    score_fn = r2_score
