"""Mean squared error between predictions and references."""

from sklearn.metrics import mean_squared_error

from mtransfer.metrics import sklearn_metric


class MSE(sklearn_metric.RegressionScore):
    metric_name = "mse"
    description = "Mean squared error between predictions and references."
    score_fn = mean_squared_error
