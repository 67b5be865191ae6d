"""Estimators against straightforward references written from the papers' formulas."""

import numpy as np
import pytest

from mtransfer.ranking import hscore, knn_accuracy, leep, logme, nce


def logme_reference(f, y, iters=10_000, tol=1e-12):
    """You et al. (2021), Algorithm 1, with explicit matrices: A = alpha I + beta F^T F, m = beta A^-1 F^T y."""
    n, d = f.shape
    ftf = f.T @ f
    eig = np.linalg.eigvalsh(ftf)
    alpha, beta = 1.0, 1.0
    for _ in range(iters):
        a = alpha * np.eye(d) + beta * ftf
        m = beta * np.linalg.solve(a, f.T @ y)
        gamma = (beta * eig / (alpha + beta * eig)).sum()
        new_alpha = gamma / (m @ m)
        new_beta = (n - gamma) / ((f @ m - y) @ (f @ m - y))
        done = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) < tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    a = alpha * np.eye(d) + beta * ftf
    m = beta * np.linalg.solve(a, f.T @ y)
    ev = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi) - beta / 2 * ((f @ m - y) @ (f @ m - y))
          - alpha / 2 * (m @ m) - np.linalg.slogdet(a)[1] / 2)
    return ev / n


def hscore_reference(f, y):
    f = f - f.mean(0)
    g = np.stack([f[y == c].mean(0) for c in y])
    return np.trace(np.linalg.inv(np.cov(f, rowvar=False)) @ np.cov(g, rowvar=False))


def leep_reference(theta, y):
    n, z = theta.shape
    classes = sorted(set(y))
    joint = np.array([[theta[y == c, j].sum() / n for j in range(z)] for c in classes])
    cond = joint / joint.sum(0)
    return np.mean([np.log(sum(cond[classes.index(y[i]), j] * theta[i, j] for j in range(z))) for i in range(n)])


def nce_reference(zs, y):
    total = 0.0
    for a in set(y):
        for b in set(zs):
            p_ab = np.mean((y == a) & (zs == b))
            if p_ab > 0:
                total += p_ab * np.log(p_ab / np.mean(zs == b))
    return total


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    f = rng.normal(size=(300, 12)) + 1.5 * np.eye(12)[y * 3]  # class signal in some dimensions
    return f, y


def test_logme_matches_the_reference_classification_and_regression(data):
    f, y = data
    onehot = np.eye(4)[y]
    ref = np.mean([logme_reference(f, onehot[:, k]) for k in range(4)])
    assert logme(f, y) == pytest.approx(ref, abs=1e-4)
    target = f[:, 0] * 2 + np.random.default_rng(1).normal(size=300) * 0.3
    assert logme(f, target) == pytest.approx(logme_reference(f, target), abs=1e-4)
    two = np.stack([target, f[:, 1] - f[:, 2] + np.random.default_rng(2).normal(size=300)], axis=1)
    assert logme(f, two) == pytest.approx((logme_reference(f, two[:, 0]) + logme_reference(f, two[:, 1])) / 2, abs=1e-4)


def test_logme_with_fewer_samples_than_dimensions_matches_the_reference():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(40, 60))
    y = (f[:, :3].sum(1) > 0).astype(int)
    onehot = np.eye(2)[y]
    ref = np.mean([logme_reference(f, onehot[:, k]) for k in range(2)])
    assert logme(f, y) == pytest.approx(ref, abs=1e-4)


def test_logme_ranks_informative_features_above_noise(data):
    f, y = data
    noise = np.random.default_rng(5).normal(size=f.shape)
    assert logme(f, y) > logme(noise, y)


def test_hscore_leep_nce_match_the_references(data):
    f, y = data
    assert hscore(f, y) == pytest.approx(hscore_reference(f, y), abs=1e-6)
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(300, 7)) + 2 * np.eye(7)[y]
    theta = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert leep(theta, y) == pytest.approx(leep_reference(theta, y), abs=1e-6)
    zs = theta.argmax(1)
    assert nce(zs, y) == pytest.approx(nce_reference(zs, y), abs=1e-6)
    # perfectly informative source labels: NCE = 0 (no uncertainty left); LEEP near 0 with near one-hot posteriors
    assert nce(y, y) == pytest.approx(0.0, abs=1e-12)
    assert leep(np.eye(4)[y] * 0.999 + 0.00025, y) > -0.01


def test_estimators_agree_on_an_easy_ordering(data):
    f, y = data
    weak = f + np.random.default_rng(4).normal(size=f.shape) * 3
    for fn in (logme, hscore, knn_accuracy):
        assert fn(f, y) > fn(weak, y), fn.__name__


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="labels: 3 labels for 4 feature rows"):
        logme(np.zeros((4, 2)), [0, 1, 0])
    with pytest.raises(ValueError, match="source_probs: rows must be probability distributions"):
        leep(np.array([[2.0, -1.0]]), [0])
    with pytest.raises(ValueError, match=r"features: expected 2-D array, got shape \(4,\)"):
        hscore(np.zeros(4), [0, 1, 0, 1])


def test_hscore_with_fewer_samples_than_dimensions_uses_shrinkage():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 60)
    good = rng.normal(size=(60, 100)) + 2 * np.eye(3, 100)[y]
    bad = rng.normal(size=(60, 100))
    # the plain estimator is degenerate here: classes - 1 for any features
    assert hscore(good, y, shrinkage=None) == pytest.approx(2.0, abs=1e-6)
    assert hscore(bad, y, shrinkage=None) == pytest.approx(2.0, abs=1e-6)
    assert hscore(good, y) > hscore(bad, y) + 0.5
    assert hscore(good, y) == pytest.approx(hscore(good, y, shrinkage="ledoit_wolf"))
    with pytest.raises(ValueError, match="hscore shrinkage='lw'"):
        hscore(good, y, shrinkage="lw")
