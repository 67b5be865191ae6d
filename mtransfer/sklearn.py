"""Backbone features as a scikit-learn transformer: a column of texts, image or audio paths in, numbers out.

``BackboneFeatures`` runs any mtransfer adapter (text, sentence, static vectors, image, torch,
audio) over one column and returns its pooled features, read from and written to the feature
cache: a grid search or a cross-validation extracts each input once, however many times the
estimator is cloned and fitted. An optional PCA (fitted on the training rows, whitened if asked)
brings the features to ``dim`` columns. It works in ``Pipeline`` and ``ColumnTransformer`` and
with ``set_output(transform="pandas")``.

>>> from sklearn.compose import ColumnTransformer  # doctest: +SKIP
>>> from sklearn.pipeline import make_pipeline  # doctest: +SKIP
>>> from sklearn.linear_model import Ridge  # doctest: +SKIP
>>> columns = ColumnTransformer([("text", BackboneFeatures("sentence", "builtin:minilm", dim=32), "description"),
...                              ("num", "passthrough", ["rooms", "area"])])  # doctest: +SKIP
>>> make_pipeline(columns, Ridge()).fit(table, table["price"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

SHARD_ROWS = 128  # cache shard size for columns: the unit each process of a launch extracts, and of resumption
_ADAPTERS: dict[str, Any] = {}  # (modality, model, settings) -> adapter, so clones in a CV load the backbone once


def _adapter(modality: str, model: str, settings: dict[str, Any]) -> Any:
    from mtransfer.adapters.base import build_adapter

    key = json.dumps([modality, str(model), settings], sort_keys=True, default=str)
    if key not in _ADAPTERS:
        _ADAPTERS[key] = build_adapter(modality, model, **settings).eval()
    return _ADAPTERS[key]


def clear_loaded_backbones() -> None:
    """Forget the backbones :class:`BackboneFeatures` keeps loaded (memory)."""
    _ADAPTERS.clear()


def check_column(modality: str, model: str, inputs: Sequence[Any], *, adapter_kwargs: dict | None = None,
                 cache_dir: str | None = None, source: str = "inputs") -> Any:
    """The cached features of exactly these inputs, or None after checking that the backbone can read
    every one (one ``ValueError`` naming each missing or broken file).

    A cache hit skips the check (the key covers each file's size and time), so a cross-validation
    reads the files once.
    """
    from mtransfer.cache import FeatureCache

    adapter = _adapter(modality, model, dict(adapter_kwargs or {}))
    cache = FeatureCache(cache_dir, shard_size=SHARD_ROWS)
    found = cache.lookup(cache.key(adapter, inputs))
    if found is None:
        adapter.validate_inputs(inputs, source=source)
    return found


def column_features(modality: str, model: str, inputs: Sequence[Any], *, adapter_kwargs: dict | None = None,
                    cache_dir: str | None = None, batch_size: int = 32, progress: bool = False,
                    process_index: int = 0, num_processes: int = 1, wait: Any = None,
                    device: Any = None, check_source: str | None = None) -> tuple[np.ndarray, int]:
    """Pooled backbone features of ``inputs`` through the feature cache, and the cache hits (0 or 1).

    Under ``accelerate launch`` give ``process_index`` / ``num_processes`` / ``wait``
    (``accelerator.wait_for_everyone``) and ``device``: each process extracts its own shards and
    every process returns all the features. With ``check_source``, inputs not yet cached are checked
    first (:func:`check_column`, named by ``check_source``); the cache key is computed once on a hit.

    Shape:
        features: ``(len(inputs), feature_dim)``, float32.
    """
    from mtransfer.cache import FeatureCache

    if check_source is not None:
        found = check_column(modality, model, inputs, adapter_kwargs=adapter_kwargs, cache_dir=cache_dir,
                             source=check_source)
        if found is not None:
            return found.all().numpy(), 1
    adapter = _adapter(modality, model, dict(adapter_kwargs or {}))
    if device is not None:
        adapter.to(device)
    cache = FeatureCache(cache_dir, shard_size=SHARD_ROWS)
    entry = cache.features(adapter, inputs, batch_size=batch_size, progress=progress, device=device,
                           process_index=process_index, num_processes=num_processes, wait=wait)
    return entry.all().numpy(), cache.hits


def _column(X: Any, name: str) -> tuple[list[Any], str | None]:
    """One column of inputs, as a list, and its name (when X says it)."""
    column = None
    if hasattr(X, "columns"):  # a DataFrame (ColumnTransformer with a list of one column)
        if len(X.columns) != 1:
            raise ValueError(f"{name}: reads one column of inputs; got {len(X.columns)} ({', '.join(map(str, X.columns[:5]))}).")
        column = str(X.columns[0])
        values = X.iloc[:, 0].tolist()
    elif hasattr(X, "name") and hasattr(X, "tolist"):  # a Series
        column, values = (str(X.name) if X.name is not None else None), X.tolist()
    else:
        array = np.asarray(X, dtype=object)
        if array.ndim == 2:
            if array.shape[1] != 1:
                raise ValueError(f"{name}: reads one column of inputs; got an array of shape {array.shape}.")
            array = array[:, 0]
        elif array.ndim != 1:
            raise ValueError(f"{name}: expected a column of inputs (1-d, or 2-d with one column); got shape {array.shape}.")
        values = array.tolist()
    missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and np.isnan(v))]
    if missing:
        where = f"column {column!r}" if column else "the input column"
        raise ValueError(f"{name}: {where} has {len(missing)} missing values (rows {', '.join(map(str, missing[:5]))}"
                         f"{' ...' if len(missing) > 5 else ''}); fill or drop them first.")
    return values, column


class BackboneFeatures(TransformerMixin, BaseEstimator):
    """Pooled features of a pretrained backbone for one column of inputs.

    Args:
        modality: An adapter name (``mtransfer modalities``): ``text``, ``sentence``, ``static``, ``image``,
            ``torch``, ``audio``...
        model: Hub id, folder or ``builtin:NAME`` of the backbone.
        adapter_kwargs: Adapter settings (``pooling``, ``max_length``, ``image_size``...).
        dim: Reduce to this many columns with a PCA fitted on the training rows; None keeps all.
        whiten: Whiten the PCA components (unit variance each).
        cache_dir: Feature-cache folder (default ``$MTRANSFER_CACHE``).
        batch_size: Inputs per backbone pass.
        progress: Show a progress bar while extracting.
        seed: PCA's random state.

    Attributes (after ``fit``):
        n_features_in_: 1. feature_names_in_: The column's name, when ``X`` had one.
        n_features_out_: Output columns. pca_: The fitted PCA, or None.
        extraction_seconds_: Time ``fit`` spent getting features (near 0 on a cache hit).
    """

    def __init__(self, modality: str = "sentence", model: str = "builtin:minilm", *, adapter_kwargs: dict | None = None,
                 dim: int | None = None, whiten: bool = False, cache_dir: str | None = None, batch_size: int = 32,
                 progress: bool = True, seed: int = 0) -> None:
        self.modality = modality
        self.model = model
        self.adapter_kwargs = adapter_kwargs
        self.dim = dim
        self.whiten = whiten
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.progress = progress
        self.seed = seed

    # --- features ---------------------------------------------------------------------------
    def _features(self, inputs: list[Any]) -> np.ndarray:
        settings = dict(adapter_kwargs=self.adapter_kwargs, cache_dir=self.cache_dir)
        feats, hits = column_features(self.modality, self.model, inputs, batch_size=self.batch_size,
                                      progress=self.progress, check_source=f"BackboneFeatures({self.model})",
                                      **settings)
        self.cache_hits_ = getattr(self, "cache_hits_", 0) + hits
        return feats

    def fit(self, X: Any, y: Any = None) -> BackboneFeatures:
        import time

        from sklearn.decomposition import PCA

        if self.dim is not None and (isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1):
            raise ValueError(f"BackboneFeatures dim={self.dim!r}: expected an integer >= 1 or None.")
        inputs, column = _column(X, type(self).__name__)
        if column is not None:
            self.feature_names_in_ = np.asarray([column], dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.n_features_in_ = 1
        self.cache_hits_ = 0
        start = time.perf_counter()
        feats = self._features(inputs)
        self.extraction_seconds_ = time.perf_counter() - start
        self.pca_ = None
        if self.dim is not None:
            if self.dim > min(feats.shape):
                raise ValueError(f"BackboneFeatures dim={self.dim}: at most {min(feats.shape)} here "
                                 f"({feats.shape[0]} rows, {feats.shape[1]} features).")
            self.pca_ = PCA(n_components=self.dim, whiten=self.whiten, random_state=self.seed).fit(feats)
        self.n_features_out_ = int(self.dim if self.dim is not None else feats.shape[1])
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "n_features_out_")
        inputs, _ = _column(X, type(self).__name__)
        feats = self._features(inputs)
        out = self.pca_.transform(feats) if self.pca_ is not None else feats
        return np.asarray(out, dtype=np.float32)

    def get_feature_names_out(self, input_features: Sequence[str] | None = None) -> np.ndarray:
        check_is_fitted(self, "n_features_out_")
        if input_features is not None:
            base = str(list(input_features)[0])
        else:
            base = str(self.feature_names_in_[0]) if hasattr(self, "feature_names_in_") else "features"
        kind = "pc" if self.pca_ is not None else "dim"
        return np.asarray([f"{base}_{kind}{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):  # noqa: D105 - inputs are texts or paths, not numbers
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        tags.requires_fit = True
        return tags
