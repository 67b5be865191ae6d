"""Ranking backbones by transferability estimators, and comparing any scores with achieved results.

:func:`rank_models` scores candidate backbones for a labelled target from their cached
features (no fine-tuning). :func:`correlate` gives Kendall's tau, Spearman's rho and the top-1
hit of any scores (an estimator's, the language-ID source scorer's) against achieved metrics;
:func:`mtransfer.experiments.validate_rankings.validate_rankings` fine-tunes every candidate to
check the estimators that way.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from mtransfer.adapters.base import (adapter_settings, build_adapter, check_adapter_settings, get_adapter_class,
                                     list_modalities)
from mtransfer.cache import FeatureCache
from mtransfer.ranking.transferability import ESTIMATORS, hscore, knn_accuracy, logme


@dataclass
class Candidate:
    """A backbone to rank: a display name, its adapter (modality), Hub id or folder, and adapter settings.

    ``adapter`` holds the adapter's constructor settings (``pooling``, ``max_length``, ...), so one
    backbone can be ranked against itself under different settings:

    >>> mean = Candidate("minilm-mean", "text", "builtin:minilm", {"pooling": "mean"})
    >>> cls = Candidate("minilm-cls", "text", "builtin:minilm", {"pooling": "cls", "max_length": 64})
    """

    name: str
    modality: str
    name_or_path: str
    adapter: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_adapter_settings(self.modality, list(self.adapter), f"candidate {self.name!r}")


_OPTION = re.compile(r"^[A-Za-z_]\w*=")


def parse_candidate(spec: str, modality: str = "text", defaults: Mapping[str, Any] | None = None) -> Candidate:
    """Read ``[NAME=][MODALITY:]PATH[,KEY=VALUE...]`` (``PATH`` alone names itself).

    ``KEY=VALUE`` pairs after the path are adapter settings (``pooling=cls,max_length=64``), read
    as YAML scalars; ``defaults`` fill the settings a candidate does not give, where its adapter
    takes them (``max_length`` stands for the adapter's own length setting, e.g. ``max_tokens``).
    """
    parts = spec.split(",")
    split = len(parts)
    while split > 1 and _OPTION.match(parts[split - 1]):
        split -= 1
    head, options = ",".join(parts[:split]), parts[split:]
    name, _, rest = head.partition("=") if "=" in head else (head, "", head)
    if not name or not rest:
        raise ValueError(f"--model {spec!r}: expected [NAME=][MODALITY:]PATH[,KEY=VALUE...].")
    mod, sep, path = rest.partition(":")
    if sep and mod in list_modalities():
        modality, rest = mod, path
    elif sep and mod != "builtin" and not Path(rest).expanduser().exists():
        raise ValueError(f"--model {spec!r}: unknown modality prefix {mod!r}; expected one of "
                         f"{', '.join(list_modalities())} (e.g. {name}=sentence:{path}).")
    cls = get_adapter_class(modality)
    settings: dict[str, Any] = {}
    for option in options:
        key, _, value = option.partition("=")
        if key == "max_length" and cls.max_length_setting:
            key = cls.max_length_setting
        settings[key] = yaml.safe_load(value)
    for key, value in (defaults or {}).items():
        key = cls.max_length_setting if key == "max_length" else key
        if value is not None and key and key not in settings and key in adapter_settings(modality)[0]:
            settings[key] = value
    return Candidate(name, modality, rest, settings)


FEATURE_ESTIMATORS = {"logme": logme, "hscore": hscore, "knn": knn_accuracy}


def check_estimators(estimators: Sequence[str]) -> list[str]:
    out = list(estimators)
    unknown = [e for e in out if e not in FEATURE_ESTIMATORS]
    if unknown:
        needs = [e for e in unknown if e in ESTIMATORS]
        hint = f" ({', '.join(needs)} need a source model's outputs: call leep / nce directly)" if needs else ""
        raise ValueError(f"unknown estimators {unknown}; rank_models takes {', '.join(FEATURE_ESTIMATORS)}{hint}.")
    return out


def candidate_features(candidate: Candidate, inputs: Sequence[Any], cache: Any = None, batch_size: int = 32) -> np.ndarray:
    """The candidate's pooled features of ``inputs`` through the feature cache. Shape: ``(n, dim)``."""
    adapter = build_adapter(candidate.modality, candidate.name_or_path, **candidate.adapter).eval()
    adapter.validate_inputs(inputs, source=candidate.name)
    cache = cache if cache is not None else FeatureCache()
    return cache.features(adapter, list(inputs), batch_size=batch_size).all().numpy()


def rank_models(candidates: Sequence[Candidate], data: Any, *, estimators: Sequence[str] = ("logme", "hscore", "knn"),
                cache_dir: str | os.PathLike | None = None, batch_size: int = 32) -> dict[str, dict[str, float]]:
    """Estimator scores of each candidate on a labelled target (a :class:`~mtransfer.data.LabeledDataset`).

    Returns:
        ``{candidate name: {estimator: score}}``.
    """
    estimators = check_estimators(estimators)
    if data.targets is None:
        raise ValueError(f"{data.source}: rank_models needs labelled data.")
    if data.task == "multi_label_classification":
        raise ValueError(f"{data.source}: estimators take single-label classes or regression targets, not multi-label.")
    labels = data.targets.numpy()
    cache = FeatureCache(cache_dir)
    scores = {}
    for c in candidates:
        feats = candidate_features(c, data.inputs, cache, batch_size)
        row = {}
        for e in estimators:
            if e != "logme" and data.task == "regression":
                continue  # H-score and kNN accuracy are for classes
            row[e] = float(FEATURE_ESTIMATORS[e](feats, labels))
        scores[c.name] = row
    return scores


def correlate(scores: Mapping[str, float], achieved: Mapping[str, float]) -> dict[str, Any]:
    """Kendall's tau, Spearman's rho and top-1 hit between predicted scores and achieved metrics.

    Ties are reported as ties, never broken by listing order: ``predicted_best`` and
    ``actual_best`` name every candidate sharing the top value (comma-separated), and
    ``top1_hit`` is True when every top-scored candidate reaches the best result, False when
    none does, and ``"tie"`` when a tie at the top holds both kinds.
    """
    from scipy.stats import kendalltau, spearmanr

    names = [n for n in scores if n in achieved]
    if len(names) < 2:
        raise ValueError(f"correlate needs at least two candidates with both a score and a result; got {names}.")
    s = np.array([scores[n] for n in names], dtype=float)
    a = np.array([achieved[n] for n in names], dtype=float)
    import warnings

    with warnings.catch_warnings():  # constant scores or results: no correlation, reported as None below
        warnings.simplefilter("ignore")
        tau = kendalltau(s, a).statistic
        rho = spearmanr(s, a).statistic
    top = [n for n, v in zip(names, s) if v == s.max()]
    best = [n for n, v in zip(names, a) if v == a.max()]
    hits = {n in best for n in top}
    return {"kendall_tau": None if np.isnan(tau) else round(float(tau), 4),
            "spearman_rho": None if np.isnan(rho) else round(float(rho), 4),
            "top1_hit": hits.pop() if len(hits) == 1 else "tie", "predicted_best": ", ".join(top),
            "actual_best": ", ".join(best)}
