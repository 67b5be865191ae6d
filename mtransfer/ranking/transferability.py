"""Transferability estimators: score a pretrained model for a labelled target without fine-tuning it.

Each is a plain function on arrays (features or source-model outputs, and target labels) that
returns a float; higher means "expected to transfer better". They run in float64 and are
vectorised over classes / target columns.

References:
    LogME: You, Liu, Wang, Long. "LogME: Practical Assessment of Pre-trained Models for
    Transfer Learning", ICML 2021.
    LEEP: Nguyen, Hassner, Seeger, Archambeau. "LEEP: A New Measure to Evaluate
    Transferability of Learned Representations", ICML 2020.
    NCE: Tran, Nguyen, Hassner. "Transferability and Hardness of Supervised Classification
    Tasks", ICCV 2019.
    H-score: Bao, Li, Huang, Wang, Zheng, Tong. "An Information-Theoretic Approach to
    Transferability in Task Transfer Learning", ICIP 2019.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ESTIMATORS = ("logme", "leep", "nce", "hscore", "knn")


def _array(x: Any, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in dims:
        raise ValueError(f"{name}: expected {' or '.join(f'{d}-D' for d in dims)} array, got shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: no rows.")
    return arr


def _class_ids(labels: Any, n: int) -> np.ndarray:
    y = _array(labels, "labels", 1)
    if len(y) != n:
        raise ValueError(f"labels: {len(y)} labels for {n} rows.")
    _, ids = np.unique(y, return_inverse=True)
    return ids


def _targets(labels: Any, n: int) -> np.ndarray:
    """Classification labels -> one-hot columns; float labels -> themselves as columns. Shape ``(n, k)``."""
    y = _array(labels, "labels", (1, 2))
    if len(y) != n:
        raise ValueError(f"labels: {len(y)} labels for {n} feature rows.")
    if y.ndim == 1 and (y.dtype.kind in "iub" or y.dtype.kind in "OSU"):
        _, ids = np.unique(y, return_inverse=True)
        return np.eye(int(ids.max()) + 1)[ids]
    y = y.astype(np.float64)
    return y[:, None] if y.ndim == 1 else y


def logme(features: Any, labels: Any, *, tol: float = 1e-6, max_iter: int = 100) -> float:
    """LogME: the mean over target columns of the log maximum evidence per sample.

    Bayesian linear regression of each target column on the features, with prior precision
    ``alpha`` and noise precision ``beta`` set by evidence maximisation (MacKay's fixed-point
    updates). One eigendecomposition of the ``D x D`` (or ``N x N`` when ``N < D``) Gram matrix
    serves every column and iteration.

    Args:
        features: Target-data features from the candidate model.
        labels: Class ids (one one-hot column per class) or float targets (regression).
        tol: Stop when ``alpha / beta`` changes by less than this (relative).
        max_iter: Upper bound on fixed-point iterations.

    Shape:
        features: ``(N, D)``; labels: ``(N,)`` class ids, or ``(N,)`` / ``(N, K)`` floats.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> f = rng.normal(size=(200, 8)); y = (f[:, 0] > 0).astype(int)
    >>> logme(f, y) > logme(rng.normal(size=(200, 8)), y)
    True
    """
    f = _array(features, "features", 2).astype(np.float64)
    n, d = f.shape
    y = _targets(labels, n)
    if n >= d:
        sigma, v = np.linalg.eigh(f.T @ f)
        sigma = np.clip(sigma, 0.0, None)
        z = v.T @ (f.T @ y)  # (D, K): the labels in the eigenbasis, scaled by the singular values
        gram_coords, extra_zeros = False, 0
    else:
        sigma, u = np.linalg.eigh(f @ f.T)
        sigma = np.clip(sigma, 0.0, None)
        z = u.T @ y  # (N, K)
        gram_coords, extra_zeros = True, d - n
    yy = (y ** 2).sum(0)
    evidences = []
    for k in range(y.shape[1]):
        zk = z[:, k]
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            t = alpha / beta
            gamma = float((sigma / (sigma + t)).sum())
            if gram_coords:  # m = V diag(s / (s^2 + t)) U^T y
                mm = float((sigma * zk ** 2 / (sigma + t) ** 2).sum())
                res = float(yy[k] - (zk ** 2).sum() + ((t * zk / (sigma + t)) ** 2).sum())
            else:  # m = V diag(1 / (sigma + t)) V^T F^T y
                mm = float((zk ** 2 / (sigma + t) ** 2).sum())
                res = float(yy[k] - 2 * (zk ** 2 / (sigma + t)).sum() + (sigma * zk ** 2 / (sigma + t) ** 2).sum())
            res = max(res, 0.0)
            alpha = gamma / (mm + 1e-12)
            beta = (n - gamma) / (res + 1e-12)
            if abs(alpha / beta - t) / t < tol:
                break
        t = alpha / beta
        if gram_coords:
            mm = float((sigma * zk ** 2 / (sigma + t) ** 2).sum())
            res = max(float(yy[k] - (zk ** 2).sum() + ((t * zk / (sigma + t)) ** 2).sum()), 0.0)
        else:
            mm = float((zk ** 2 / (sigma + t) ** 2).sum())
            res = max(float(yy[k] - 2 * (zk ** 2 / (sigma + t)).sum() + (sigma * zk ** 2 / (sigma + t) ** 2).sum()), 0.0)
        logdet = float(np.log(alpha + beta * sigma).sum()) + extra_zeros * np.log(alpha)
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - alpha / 2 * mm - beta / 2 * res
                    - logdet / 2 - n / 2 * np.log(2 * np.pi))
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def leep(source_probs: Any, labels: Any) -> float:
    """LEEP: the average log-likelihood of the target labels under the "dummy" classifier
    ``P(y | x) = sum_z P(y | z) theta_z(x)``, with ``P(y | z)`` the empirical conditional of
    target labels given the source model's label distribution.

    Shape:
        source_probs: ``(N, Z)`` the source model's probabilities over its ``Z`` labels (rows sum
        to 1); labels: ``(N,)`` target class ids.
    """
    theta = _array(source_probs, "source_probs", 2).astype(np.float64)
    n = theta.shape[0]
    if (theta < 0).any() or not np.allclose(theta.sum(1), 1.0, atol=1e-4):
        raise ValueError("source_probs: rows must be probability distributions (non-negative, summing to 1); "
                         "pass softmax outputs, not logits.")
    y = _class_ids(labels, n)
    joint = np.zeros((int(y.max()) + 1, theta.shape[1]))
    np.add.at(joint, y, theta)
    joint /= n  # P(y, z)
    conditional = joint / np.clip(joint.sum(0, keepdims=True), 1e-300, None)  # P(y | z)
    likelihood = (theta * conditional[y]).sum(1)
    return float(np.mean(np.log(np.clip(likelihood, 1e-300, None))))


def nce(source_labels: Any, labels: Any) -> float:
    """NCE: the negative conditional entropy ``-H(Y | Z)`` of target labels given source labels.

    Shape:
        source_labels: ``(N,)`` the source model's hard predictions; labels: ``(N,)`` target class ids.
    """
    z = _class_ids(source_labels, _array(source_labels, "source_labels", 1).shape[0])
    y = _class_ids(labels, len(z))
    joint = np.zeros((int(y.max()) + 1, int(z.max()) + 1))
    np.add.at(joint, (y, z), 1.0)
    joint /= len(z)
    pz = joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / np.broadcast_to(pz, joint.shape)[nz])).sum())


def hscore(features: Any, labels: Any, *, shrinkage: str | float | None = "auto", rcond: float = 1e-15) -> float:
    """H-score: ``tr(cov(f)^-1 cov(E[f | y]))``, how well class-conditional means of the features
    separate relative to their overall spread.

    With fewer samples than dimensions the sample covariance is singular and the plain score
    degenerates to ``classes - 1`` for every model; ``shrinkage="auto"`` then uses the
    Ledoit-Wolf shrunk covariance (the shrinkage H-score of Ibrahim, Ponomareva and Mazumder,
    ICLR 2023) and keeps the paper's plain estimator otherwise.

    Args:
        shrinkage: ``"auto"`` (Ledoit-Wolf exactly when ``N <= D``), a fixed coefficient in
            [0, 1], ``"ledoit_wolf"`` (always), or None (never: pseudo-inverse).

    Shape:
        features: ``(N, D)``; labels: ``(N,)`` class ids.
    """
    f = _array(features, "features", 2).astype(np.float64)
    y = _class_ids(labels, f.shape[0])
    f = f - f.mean(0, keepdims=True)
    counts = np.bincount(y).astype(np.float64)
    means = np.zeros((len(counts), f.shape[1]))
    np.add.at(means, y, f)
    means /= counts[:, None]
    g = means[y]  # each row replaced by its class mean
    n, d = f.shape
    if shrinkage == "auto":
        shrinkage = "ledoit_wolf" if n <= d else None
    if shrinkage is None:
        cov_f = f.T @ f / (n - 1)
        cov_g = g.T @ g / (n - 1)
        return float(np.trace(np.linalg.pinv(cov_f, rcond=rcond, hermitian=True) @ cov_g))
    from sklearn.covariance import ledoit_wolf

    cov_g = g.T @ g / n
    if shrinkage == "ledoit_wolf":
        cov_f, _ = ledoit_wolf(f, assume_centered=True)
    elif isinstance(shrinkage, (int, float)) and 0 <= shrinkage <= 1:
        emp = f.T @ f / n
        cov_f = (1 - shrinkage) * emp + shrinkage * np.trace(emp) / d * np.eye(d)
    else:
        raise ValueError(f"hscore shrinkage={shrinkage!r}: expected 'auto', 'ledoit_wolf', a number in [0, 1] or None.")
    return float(np.trace(np.linalg.solve(cov_f, cov_g)))


def knn_accuracy(features: Any, labels: Any, *, k: int = 5, metric: str = "cosine") -> float:
    """Leave-one-out k-nearest-neighbour accuracy of the features (a baseline estimator).

    Shape:
        features: ``(N, D)``; labels: ``(N,)`` class ids.
    """
    from sklearn.neighbors import NearestNeighbors

    f = _array(features, "features", 2).astype(np.float64)
    y = _class_ids(labels, f.shape[0])
    if len(f) <= k:
        raise ValueError(f"knn_accuracy: {len(f)} rows; need more than k={k}.")
    nn = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(f)
    idx = nn.kneighbors(f, return_distance=False)
    votes = []
    for i, row in enumerate(idx):
        others = [j for j in row if j != i][:k]
        votes.append(np.bincount(y[others], minlength=int(y.max()) + 1).argmax())
    return float(np.mean(np.asarray(votes) == y))
