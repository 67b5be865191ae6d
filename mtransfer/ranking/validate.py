"""Ranking backbones by transferability estimators, and checking the estimators against real fine-tuning.

:func:`rank_models` scores candidate backbones for a labelled target from their cached
features (no fine-tuning). :func:`validate_rankings` also fine-tunes every candidate on the
target with a short budget and reports, per estimator, Kendall's tau, Spearman's rho and
whether its top choice is the best fine-tuned model; :func:`correlate` does the same for any
scores (e.g. the language-ID source scorer's) against achieved metrics.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

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
        from mtransfer.adapters.base import check_adapter_settings

        check_adapter_settings(self.modality, list(self.adapter), f"candidate {self.name!r}")


_OPTION = re.compile(r"^[A-Za-z_]\w*=")


def parse_candidate(spec: str, modality: str = "text", defaults: Mapping[str, Any] | None = None) -> Candidate:
    """Read ``[NAME=][MODALITY:]PATH[,KEY=VALUE...]`` (``PATH`` alone names itself).

    ``KEY=VALUE`` pairs after the path are adapter settings (``pooling=cls,max_length=64``), read
    as YAML scalars; ``defaults`` fill the settings a candidate does not give, where its adapter
    takes them (``max_length`` stands for the adapter's own length setting, e.g. ``max_tokens``).
    """
    from mtransfer.adapters.base import adapter_settings, get_adapter_class, list_modalities

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


def _check_estimators(estimators: Sequence[str]) -> list[str]:
    out = list(estimators)
    unknown = [e for e in out if e not in FEATURE_ESTIMATORS]
    if unknown:
        needs = [e for e in unknown if e in ESTIMATORS]
        hint = f" ({', '.join(needs)} need a source model's outputs: call leep / nce directly)" if needs else ""
        raise ValueError(f"unknown estimators {unknown}; rank_models takes {', '.join(FEATURE_ESTIMATORS)}{hint}.")
    return out


def candidate_features(candidate: Candidate, inputs: Sequence[Any], cache: Any = None, batch_size: int = 32) -> np.ndarray:
    """The candidate's pooled features of ``inputs`` through the feature cache. Shape: ``(n, dim)``."""
    from mtransfer.cache import FeatureCache
    from mtransfer.adapters.base import build_adapter

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
    from mtransfer.cache import FeatureCache

    estimators = _check_estimators(estimators)
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


@dataclass
class ValidationReport:
    """Estimator scores, fine-tuned results and their agreement."""

    scores: dict[str, dict[str, float]]
    achieved: dict[str, float]
    metric: str
    agreement: dict[str, dict[str, Any]]

    def __repr__(self) -> str:
        return f"ValidationReport(metric={self.metric!r})\n{self.table()}"

    def table(self) -> str:
        estimators = sorted({e for row in self.scores.values() for e in row})
        width = max(10, *(len(n) for n in self.scores))
        lines = ["candidate".ljust(width) + "".join(e.rjust(11) for e in estimators) + self.metric.rjust(16)]
        for name, row in self.scores.items():
            lines.append(name.ljust(width) + "".join(f"{row.get(e, float('nan')):11.4f}" for e in estimators)
                         + f"{self.achieved[name]:16.4f}")
        lines.append("")
        lines.append("estimator   kendall_tau  spearman_rho  top1_hit")
        for e, a in self.agreement.items():
            lines.append(f"{e:<12}{a['kendall_tau']!s:>11}{a['spearman_rho']!s:>14}{a['top1_hit']!s:>10}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "scores": self.scores, "achieved": self.achieved, "agreement": self.agreement}

    def plot(self, path: str | os.PathLike) -> Path:
        """One scatter per estimator: score vs achieved metric, candidates labelled."""
        from matplotlib.figure import Figure  # no pyplot: never switches a notebook's backend

        estimators = list(self.agreement)
        fig = Figure(figsize=(3.6 * len(estimators), 3.2))
        axes = fig.subplots(1, len(estimators), squeeze=False)
        for ax, e in zip(axes[0], estimators):
            names = [n for n in self.scores if e in self.scores[n]]
            xs = [self.scores[n][e] for n in names]
            ys = [self.achieved[n] for n in names]
            ax.scatter(xs, ys)
            for n, x, y in zip(names, xs, ys):
                ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            a = self.agreement[e]
            ax.set_title(f"{e}: tau={a['kendall_tau']}", fontsize=9)
            ax.set_xlabel(f"{e} score")
            ax.set_ylabel(self.metric)
        fig.tight_layout()
        from mtransfer.plots import save_figure

        return save_figure(fig, path, dpi=120)


def validate_rankings(candidates: Sequence[Candidate], train: Any, evaluation: Any, *,
                      estimators: Sequence[str] = ("logme", "hscore", "knn"), training: Mapping[str, Any] | None = None,
                      metric: str = "eval_accuracy", output_dir: str | os.PathLike = "outputs/validate_rankings",
                      seed: int = 0) -> ValidationReport:
    """Score each candidate on ``train`` with the estimators, fine-tune it (short budget) and
    evaluate on ``evaluation``; report how well each estimator's ranking predicts the result.

    Args:
        candidates: Backbones to compare.
        train, evaluation: Labelled target data (the estimators read ``train`` only).
        estimators: Feature-based estimators to check.
        training: :class:`~mtransfer.training.TrainingArguments` settings for the fine-tuning runs
            (default: a 10-epoch frozen probe on cached features).
        metric: The achieved metric to rank by (``eval_accuracy``, ``eval_f1``, ``eval_r2``...).
        output_dir: Each candidate's run goes to ``output_dir/<name>``; the report to ``report.json``.
    """
    import mtransfer as mt

    settings = {"strategy": "frozen", "num_epochs": 10, "learning_rate": 1e-2, "batch_size": 16, "report_to": [],
                "plot": False, "save_checkpoints": False, "progress_bar": False, "seed": seed}
    settings.update(training or {})
    scores = rank_models(candidates, train, estimators=estimators)
    achieved = {}
    out = Path(output_dir)
    for c in candidates:
        model = mt.TransferModel.from_backbone(c.modality, c.name_or_path, labels=train.label_names, task=train.task,
                                               seed=seed, **c.adapter)
        trainer = mt.Trainer(model, mt.TrainingArguments(output_dir=str(out / c.name), **settings), train)
        trainer.train()
        achieved[c.name] = float(trainer.evaluate(evaluation)[metric])
    agreement = {e: correlate({n: s[e] for n, s in scores.items() if e in s}, achieved)
                 for e in _check_estimators(estimators) if any(e in s for s in scores.values())}
    report = ValidationReport(scores, achieved, metric, agreement)
    out.mkdir(parents=True, exist_ok=True)
    from mtransfer.atomic import atomic_write_json

    atomic_write_json(out / "report.json", report.to_dict())
    report.plot(out / "agreement.png")
    return report

