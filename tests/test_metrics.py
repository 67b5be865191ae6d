import numpy as np
import pytest
from sklearn.metrics import f1_score, mean_absolute_error, r2_score

from mtransfer.metrics import SHIPPED, compute_metrics, greater_is_better, load_metric


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_modules_load_offline(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import inspect
    from pathlib import Path

    import mtransfer.metrics

    metric = load_metric(name)
    shipped = Path(mtransfer.metrics.__file__).parent / name / f"{name}.py"
    # the module that ran is the one shipped in the package (evaluate copies it into its cache), not the Hub's
    assert Path(inspect.getfile(type(metric))).read_text() == shipped.read_text()
    if name in ("accuracy", "f1", "precision", "recall"):
        kwargs = {} if name == "accuracy" else {"average": "macro"}
        out = metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0], **kwargs)
    elif name in ("wer", "cer"):
        out = metric.compute(predictions=["the cat sit", "a b"], references=["the cat sat", "a b c"])
    else:
        out = metric.compute(predictions=[1.0, 2.0, 4.0], references=[1.0, 2.5, 3.0])
    assert set(out) == {name} and np.isfinite(out[name]) and out[name] != 0.0


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    out = compute_metrics("single_label_classification", ["accuracy", "f1", "precision", "recall"], p, y)
    assert out["accuracy"] == pytest.approx((y == p).mean())
    assert out["f1"] == pytest.approx(f1_score(y, p, average="macro"))


def test_multilabel_and_regression_metrics():
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    p = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    out = compute_metrics("multi_label_classification", ["f1", "accuracy"], p, y)
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(f1_score(y, p, average="macro"))
    t = np.array([[1.0], [2.0], [4.0]])
    q = np.array([[1.5], [2.0], [3.0]])
    reg = compute_metrics("regression", ["mse", "mae", "r_squared"], q, t)
    assert reg == pytest.approx({"mse": (0.25 + 1) / 3, "mae": mean_absolute_error(t, q), "r_squared": r2_score(t, q)})


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match="Cannot load metric 'no_such_metric_xyz'"):
        load_metric("no_such_metric_xyz")


def test_direction():
    assert greater_is_better("eval_accuracy") and not greater_is_better("eval_loss") and not greater_is_better("mse")


@pytest.mark.parametrize("task", ["single_label_classification", "multi_label_classification", "regression",
                                  "regression-multi"])
def test_the_shipped_scores_computed_directly_equal_their_evaluate_modules(task, monkeypatch):
    """compute_metrics calls the shipped modules' scikit-learn functions without evaluate; the values are the
    modules' own, bit for bit."""
    import mtransfer.metrics as metrics

    rng = np.random.default_rng(1)
    if task == "single_label_classification":
        y, p, names = rng.integers(0, 4, 60), rng.integers(0, 4, 60), ["accuracy", "f1", "precision", "recall"]
    elif task == "multi_label_classification":
        y, p, names = rng.integers(0, 2, (60, 3)), rng.integers(0, 2, (60, 3)), ["accuracy", "f1", "precision", "recall"]
    else:
        width = 2 if task == "regression-multi" else 1
        y, names = rng.normal(size=(60, width)).astype(np.float32), ["mse", "mae", "r_squared"]
        p = (y + rng.normal(scale=0.5, size=y.shape)).astype(np.float32)
        task = "regression"
    direct = compute_metrics(task, names, p, y)
    monkeypatch.setattr(metrics, "shipped_score", lambda *args: None)  # through evaluate.load, as before
    assert compute_metrics(task, names, p, y) == direct


def test_a_classification_run_scores_without_importing_evaluate_or_scikit_learn():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from mtransfer.metrics import compute_metrics; "
            "print(compute_metrics('single_label_classification', ['accuracy', 'f1'], np.array([0, 1, 1]), "
            "np.array([0, 1, 0]))); print('evaluate' in sys.modules, 'sklearn.metrics' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[1] == "False False", out  # single-label scores are counted: not even scikit-learn's import


def test_counted_classification_scores_equal_scikit_learns_with_absent_classes():
    from sklearn.metrics import accuracy_score, precision_score, recall_score

    y = np.array([0, 0, 1, 2, 2, 2, 5])
    p = np.array([0, 3, 1, 1, 2, 2, 2])  # class 3 only predicted, class 5 never predicted
    out = compute_metrics("single_label_classification", ["accuracy", "f1", "precision", "recall"], p, y)
    assert out == {"accuracy": accuracy_score(y, p), "f1": f1_score(y, p, average="macro", zero_division=0),
                   "precision": precision_score(y, p, average="macro", zero_division=0),
                   "recall": recall_score(y, p, average="macro", zero_division=0)}
