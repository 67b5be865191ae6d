"""Mean absolute error between predictions and references."""

from sklearn.metrics import mean_absolute_error

from mtransfer.metrics import sklearn_metric


class MAE(sklearn_metric.RegressionScore):
    metric_name = "mae"
    description = "Mean absolute error between predictions and references."
    score_fn = mean_absolute_error
