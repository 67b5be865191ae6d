"""scikit-learn models on (cached) backbone features, and their conversion into heads.

The lectures' first transfer recipe: freeze the backbone, save its features, fit a light
model. :func:`fit_linear` fits one of

* ``logistic``: logistic regression with cross-validated C (one-vs-rest for multi-label);
* ``linear_svm``: a linear SVM with C chosen by cross-validated grid search;
* ``ridge``: ridge classification or regression with cross-validated alpha;
* ``knn``: k nearest neighbours with k chosen by cross-validation (not convertible to a head);

each behind a ``StandardScaler``. :meth:`LinearProbe.to_head` folds the scaler into the
weights and returns a linear :class:`~mtransfer.heads.Head` whose decisions equal the
scikit-learn model's (and whose probabilities equal ``predict_proba`` for logistic
regression), so the probe can become a model's head and be fine-tuned further
(linear-probe-then-fine-tune). The head is plain tensors: nothing is pickled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from mtransfer.heads import Head, HeadConfig
from mtransfer.metrics import compute_metrics
from mtransfer.tasks import get_task

KINDS = ("logistic", "linear_svm", "ridge", "knn")


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@dataclass
class LinearProbe:
    """A fitted scikit-learn pipeline (scaler + model) on features, for one task.

    Attributes:
        estimator: The fitted ``Pipeline``.
        kind: ``logistic``, ``linear_svm``, ``ridge`` or ``knn``.
        task: The head task.
        num_outputs: Classes, labels or targets.
        best_params: The regularisation (or k) chosen by cross-validation.
        fit_seconds: Time to fit, cross-validation included.
    """

    estimator: Any
    kind: str
    task: str
    num_outputs: int
    best_params: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0
    target_mean: np.ndarray | None = None
    target_std: np.ndarray | None = None

    def predict(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """Class ids ``(n,)``, 0/1 indicators ``(n, labels)`` or values ``(n, targets)``."""
        out = self.estimator.predict(_numpy(features))
        if self.task == "regression":
            return np.asarray(out, dtype=np.float64).reshape(len(out), -1)
        return np.asarray(out)

    def evaluate(self, features: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray,
                 metrics: Sequence[str] | None = None) -> dict[str, float]:
        """The task's metrics, named like the trainer's (``eval_accuracy``...)."""
        preds = self.predict(features)
        refs = _numpy(targets)
        if self.task == "regression":
            refs = refs.reshape(len(refs), -1)
        names = list(metrics or get_task(self.task).metrics)
        return {f"eval_{k}": v for k, v in compute_metrics(self.task, names, preds, refs).items()}

    def to_head(self, dropout: float = 0.1) -> Head:
        """A linear head computing the same decisions (the scaler folded into the weights)."""
        if self.kind == "knn":
            raise ValueError("A kNN model has no weights to turn into a head; use kind='logistic', 'linear_svm' or 'ridge'.")
        scaler = self.estimator.named_steps["scale"]
        model = self.estimator.named_steps["model"]
        if self.task == "multi_label_classification":
            coef = np.concatenate([e.coef_ for e in model.estimators_])
            intercept = np.concatenate([np.ravel(e.intercept_) for e in model.estimators_])
        else:
            coef, intercept = np.atleast_2d(model.coef_), np.ravel(np.asarray(model.intercept_, dtype=np.float64))
            if intercept.size == 1 and coef.shape[0] > 1:
                intercept = np.repeat(intercept, coef.shape[0])
        mean = scaler.mean_ if scaler.mean_ is not None else np.zeros(coef.shape[1])
        scale = scaler.scale_ if scaler.scale_ is not None else np.ones(coef.shape[1])
        weight = coef / scale
        bias = intercept - (coef * (mean / scale)).sum(axis=1)
        if self.task == "single_label_classification" and weight.shape[0] == 1:
            # binary: sklearn's one decision value z for class 1 == logits (0, z) under argmax and softmax
            weight = np.concatenate([np.zeros_like(weight), weight])
            bias = np.concatenate([[0.0], bias])
        if self.task == "regression":
            # in the head's standardised units, with the training targets' statistics (as the trainer sets them)
            weight = weight / self.target_std[:, None]
            bias = (bias - self.target_mean) / self.target_std
        head = Head(HeadConfig(task=self.task, num_outputs=self.num_outputs, input_dim=weight.shape[1], dropout=dropout))
        with torch.no_grad():
            head.out.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            head.out.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
            if self.task == "regression":
                head.target_mean.copy_(torch.as_tensor(self.target_mean, dtype=torch.float32))
                head.target_std.copy_(torch.as_tensor(self.target_std, dtype=torch.float32))
        return head

    def __repr__(self) -> str:
        return f"LinearProbe(kind={self.kind!r}, task={self.task!r}, best={self.best_params}, fit={self.fit_seconds:.2f}s)"


def _targets_and_folds(y: np.ndarray, task: str, kind: str, cv: int, seed: int,
                       num_labels: int | None) -> tuple[np.ndarray, np.ndarray, int, Any]:
    """``(targets, targets as the estimator takes them, head outputs, cross-validation splitter)``; checks the task."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if task == "regression":
        y = y.astype(np.float64).reshape(len(y), -1)
        y_fit = y[:, 0] if y.shape[1] == 1 else y
        num_outputs = y.shape[1]
        splitter = KFold(n_splits=min(cv, len(y)), shuffle=True, random_state=seed)
        if kind in ("logistic", "linear_svm"):
            raise ValueError(f"kind={kind!r} is for classification; regression takes 'ridge' or 'knn'.")
    elif task == "multi_label_classification":
        y_fit = y.astype(int)
        num_outputs = y.shape[1]
        splitter = KFold(n_splits=min(cv, len(y)), shuffle=True, random_state=seed)
        if kind not in ("logistic",):
            raise ValueError(f"kind={kind!r} does not do multi-label here; use 'logistic' (one-vs-rest).")
    else:
        y_fit = y.astype(int)
        num_outputs = int(num_labels) if num_labels is not None else int(y_fit.max()) + 1
        if len(y_fit) and (y_fit.min() < 0 or y_fit.max() >= num_outputs):
            raise ValueError(f"class ids must be in 0..{num_outputs - 1} (num_labels={num_outputs}); got {y_fit.min()}..{y_fit.max()}.")
        counts = np.bincount(y_fit, minlength=num_outputs)
        if counts.min() < 2:
            few = [int(c) for c in np.flatnonzero(counts < 2)][:10]
            raise ValueError(f"Every class needs at least 2 examples for cross-validated linear models; classes {few} have "
                             f"{[int(counts[c]) for c in few]}.")
        smallest = counts.min()
        splitter = StratifiedKFold(n_splits=min(cv, int(smallest)), shuffle=True, random_state=seed)

    return y, y_fit, num_outputs, splitter


def fit_linear(features: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray, *,
               task: str = "single_label_classification", kind: str = "logistic", cv: int = 5, scale: bool = True,
               seed: int = 0, max_iter: int = 2000, num_labels: int | None = None) -> LinearProbe:
    """Fit a scaled scikit-learn model on features, choosing its regularisation by cross-validation.

    Args:
        features: ``(n, dim)``.
        targets: Class ids ``(n,)``, 0/1 indicators ``(n, labels)`` or values ``(n, targets)``.
        task: The head task.
        kind: ``logistic``, ``linear_svm``, ``ridge`` or ``knn``.
        cv: Folds (lowered to the smallest class's size when needed).
        scale: Standardise features first (folded into the head by ``to_head``).
        seed: Seeds the fold split and the solvers.
        max_iter: Solver iterations.
        num_labels: Size of the label set (single-label): the head gets this many outputs, and
            every class must be present; default: the largest class id seen + 1.
    """
    from sklearn.linear_model import LogisticRegressionCV, RidgeClassifierCV, RidgeCV
    from sklearn.model_selection import GridSearchCV
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if kind not in KINDS:
        raise ValueError(f"Unknown linear model kind {kind!r}; expected one of {', '.join(KINDS)}.")
    X = _numpy(features).astype(np.float64)
    y = _numpy(targets)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"fit_linear needs features (n, dim) and n targets; got {X.shape} and {y.shape}.")
    y, y_fit, num_outputs, splitter = _targets_and_folds(y, task, kind, cv, seed, num_labels)
    alphas = np.logspace(-3, 3, 13)
    grid_c = {"C": list(np.logspace(-3, 2, 6))}
    logistic = dict(Cs=10, max_iter=max_iter, random_state=seed, use_legacy_attributes=False, l1_ratios=(0.0,),
                    scoring="neg_log_loss")
    if kind == "logistic" and task == "multi_label_classification":
        model = OneVsRestClassifier(LogisticRegressionCV(cv=splitter.n_splits, **logistic))
    elif kind == "logistic":
        model = LogisticRegressionCV(cv=splitter, **logistic)
    elif kind == "linear_svm":
        model = GridSearchCV(LinearSVC(max_iter=max_iter * 5, random_state=seed), grid_c, cv=splitter)
    elif kind == "ridge":
        model = RidgeCV(alphas=alphas) if task == "regression" else RidgeClassifierCV(alphas=alphas)
    else:
        estimator = KNeighborsRegressor() if task == "regression" else KNeighborsClassifier()
        ks = [k for k in (1, 3, 5, 7, 11, 15, 21) if k <= max(1, len(X) - len(X) // splitter.n_splits)]
        model = GridSearchCV(estimator, {"n_neighbors": ks}, cv=splitter)
    start = time.perf_counter()
    pipe = Pipeline([("scale", StandardScaler(with_mean=scale, with_std=scale)), ("model", model)])
    pipe.fit(X, y_fit)
    fitted = pipe.named_steps["model"]
    if isinstance(fitted, GridSearchCV):  # keep the refitted best estimator, so to_head sees coef_
        best = dict(fitted.best_params_)
        pipe.steps[-1] = ("model", fitted.best_estimator_)
    elif hasattr(fitted, "C_"):
        best = {"C": float(np.ravel(fitted.C_)[0])}
    elif hasattr(fitted, "alpha_"):
        best = {"alpha": float(np.ravel(fitted.alpha_)[0])}
    else:
        best = {}
    probe = LinearProbe(pipe, kind, task, num_outputs, best, time.perf_counter() - start)
    if task == "regression":
        std = y.std(axis=0)
        probe.target_mean, probe.target_std = y.mean(axis=0), np.where(std > 1e-12, std, 1.0)
    return probe


def fit_linear_probe(model: Any, train: Any, eval_dataset: Any = None, *, kind: str = "logistic", cache: Any = None,
                     install: bool = True, batch_size: int = 64, **fit_kwargs: Any) -> tuple[LinearProbe, dict[str, float]]:
    """Fit a linear model on a model's cached backbone features; optionally make it the model's head.

    Args:
        model: A :class:`~mtransfer.model.TransferModel`; its backbone is only run (once per dataset).
        train: Labelled training data (a :class:`~mtransfer.data.LabeledDataset`).
        eval_dataset: Labelled data to report metrics on.
        kind: ``logistic``, ``linear_svm``, ``ridge`` or ``knn``.
        cache: A :class:`~mtransfer.cache.FeatureCache` (default: one at the default folder).
        install: Replace ``model.head`` with the fitted model (not for ``knn``).
        **fit_kwargs: Passed to :func:`fit_linear` (``cv``, ``scale``, ``seed``).

    Returns:
        The probe and its metrics on ``eval_dataset`` (empty without one).
    """
    from mtransfer.cache import FeatureCache

    cache = cache if cache is not None else FeatureCache()
    feats = cache.features(model.adapter, train.inputs, batch_size=batch_size).all()
    if model.task == "single_label_classification":
        fit_kwargs.setdefault("num_labels", len(model.label_names))
    probe = fit_linear(feats, train.targets, task=model.task, kind=kind, **fit_kwargs)
    metrics: dict[str, float] = {}
    if eval_dataset is not None:
        metrics = probe.evaluate(cache.features(model.adapter, eval_dataset.inputs, batch_size=batch_size).all(),
                                 eval_dataset.targets)
    if install:
        model.head = probe.to_head(dropout=model.head.config.dropout)
    return probe, metrics
