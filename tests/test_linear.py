import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_multilabel_classification, make_regression

from mtransfer.linear import fit_linear


def head_outputs(head, X):
    head.eval()
    with torch.no_grad():
        return head(torch.as_tensor(X, dtype=torch.float32))


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)  # real data: 8x8 handwritten digits
    return X[:600].astype(np.float32), y[:600], X[600:900].astype(np.float32), y[600:900]


@pytest.mark.parametrize("kind", ["logistic", "linear_svm", "ridge"])
def test_head_from_linear_model_matches_sklearn_multiclass(kind, digits):
    X, y, Xt, yt = digits
    probe = fit_linear(X, y, kind=kind, cv=3)
    head = probe.to_head()
    sk = probe.estimator.predict(Xt)
    ours = head.predict(head_outputs(head, Xt)).numpy()
    assert (ours == sk).mean() >= 0.997  # float32 head vs float64 sklearn: ties may flip at most 1 in 300
    assert probe.evaluate(Xt, yt)["eval_accuracy"] > 0.85
    if kind == "logistic":
        proba = head.scores(head_outputs(head, Xt)).numpy()
        assert np.abs(proba - probe.estimator.predict_proba(Xt)).max() < 1e-4


@pytest.mark.parametrize("kind", ["logistic", "linear_svm", "ridge"])
def test_binary_head_matches_sklearn(kind, digits):
    X, y, Xt, _ = digits
    yb, = (y % 2,)
    probe = fit_linear(X, yb, kind=kind, cv=3)
    head = probe.to_head()
    assert head.config.num_outputs == 2
    assert (head.predict(head_outputs(head, Xt)).numpy() == probe.estimator.predict(Xt)).mean() >= 0.997
    if kind == "logistic":
        p = head.scores(head_outputs(head, Xt)).numpy()
        assert np.abs(p - probe.estimator.predict_proba(Xt)).max() < 1e-4


def test_ridge_regression_head_in_original_units():
    X, y = make_regression(n_samples=200, n_features=12, n_targets=2, noise=3.0, random_state=0)
    y = y * 50 + 1000
    probe = fit_linear(X[:150], y[:150], task="regression", kind="ridge")
    head = probe.to_head()
    ours = head.predict(head_outputs(head, X[150:])).numpy()
    assert np.allclose(ours, probe.estimator.predict(X[150:]), rtol=1e-4, atol=1e-2)
    assert probe.evaluate(X[150:], y[150:])["eval_r_squared"] > 0.9


def test_multilabel_logistic_head_matches_sklearn():
    X, Y = make_multilabel_classification(n_samples=200, n_features=10, n_classes=3, random_state=0)
    probe = fit_linear(X[:150], Y[:150], task="multi_label_classification", kind="logistic", cv=3)
    head = probe.to_head()
    ours = head.predict(head_outputs(head, X[150:])).numpy()
    assert (ours == probe.estimator.predict(X[150:])).mean() >= 0.99
    assert "eval_f1" in probe.evaluate(X[150:], Y[150:])


def test_knn_reports_but_cannot_become_a_head(digits):
    X, y, Xt, yt = digits
    probe = fit_linear(X, y, kind="knn", cv=3)
    assert probe.evaluate(Xt, yt)["eval_accuracy"] > 0.9 and "n_neighbors" in probe.best_params
    with pytest.raises(ValueError, match="kNN model has no weights"):
        probe.to_head()


def test_errors():
    with pytest.raises(ValueError, match="Unknown linear model kind 'forest'"):
        fit_linear(np.zeros((4, 2)), np.array([0, 1, 0, 1]), kind="forest")
    with pytest.raises(ValueError, match="at least 2 examples"):
        fit_linear(np.zeros((3, 2)), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="regression takes 'ridge' or 'knn'"):
        fit_linear(np.zeros((4, 2)), np.array([0.1, 1, 2, 3]), task="regression", kind="logistic")


def test_head_is_sized_from_the_label_set_not_the_largest_label_seen(digits):
    X, y = digits[:2]
    keep = y < 8  # classes 8 and 9 of a 10-label set have no training examples
    with pytest.raises(ValueError, match=r"classes \[8, 9\] have \[0, 0\]"):
        fit_linear(X[keep], y[keep], num_labels=10)
    probe = fit_linear(X, y, num_labels=10, cv=3)
    assert probe.to_head().config.num_outputs == 10
