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
