"""The language-ID source scorer: which candidate source dataset is closest to the target data?

The lecture's recipe (shared/seeds/004): train a classifier that tells the K candidate
sources apart (a language-ID classifier when the sources are languages), run it on the target
data and average its posteriors per source; the source with the highest average posterior is
the best one to pretrain on. Works on any modality: the features come from a backbone
through the feature cache, or, for speech, from a no-pretraining baseline (log-mel
filterbank statistics through torchaudio).

>>> scores = rank_sources({"bn": bn_clips, "hi": hi_clips, "de": de_clips}, {"as": as_clips})  # doctest: +SKIP
>>> scores.rankings[0].ranking[0]["source"]  # doctest: +SKIP
'bn'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

FBANK = "fbank"


class FbankFeaturizer:
    """Utterance features without pretraining: the mean and standard deviation over frames of
    ``num_mel_bins`` log-mel filterbank energies (Kaldi-compatible, 25 ms windows, 10 ms hop).

    Shape:
        :meth:`__call__` returns ``(len(inputs), 2 * num_mel_bins)``.
    """

    name = FBANK

    def __init__(self, sampling_rate: int = 16_000, num_mel_bins: int = 80) -> None:
        self.sampling_rate = sampling_rate
        self.num_mel_bins = num_mel_bins

    def utterance(self, item: Any) -> np.ndarray:
        import torchaudio

        from mtransfer.media import load_audio

        wav = load_audio(item, self.sampling_rate)
        min_len = int(0.025 * self.sampling_rate)
        if wav.numel() < min_len:
            wav = torch.nn.functional.pad(wav, (0, min_len - wav.numel()))
        fb = torchaudio.compliance.kaldi.fbank(wav[None] * 32768.0, num_mel_bins=self.num_mel_bins,
                                               sample_frequency=self.sampling_rate, dither=0.0)
        return torch.cat([fb.mean(0), fb.std(0, unbiased=False)]).numpy()

    def __call__(self, inputs: Sequence[Any]) -> np.ndarray:
        return np.stack([self.utterance(x) for x in inputs]).astype(np.float32)


def resolve_inputs(data: Any, input_column: str = "audio") -> list[Any]:
    """Raw inputs from a list, a :class:`~mtransfer.data.LabeledDataset`, a folder of audio /
    image files (searched recursively), or a data file / dataset name with ``input_column``."""
    from mtransfer.data import LabeledDataset, load_labeled
    from mtransfer.media import AUDIO_SUFFIXES, IMAGE_SUFFIXES

    if isinstance(data, LabeledDataset):
        return list(data.inputs)
    if isinstance(data, (str, os.PathLike)):
        path = Path(data).expanduser()
        if path.is_dir() and not (path / "metadata.csv").is_file():
            files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES + IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"{path}: no audio or image files in the folder.")
            return files
        return list(load_labeled(str(path), input_column=input_column, label_column=None).inputs)
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValueError("an empty list of inputs.")
        return list(data)
    raise TypeError(f"Cannot read inputs from {type(data).__name__}; pass a list, a LabeledDataset, a folder or a data file.")


@dataclass
class SourceRanking:
    """One target's scores: the average posterior of each source, with a bootstrap confidence interval."""

    target: str
    sources: list[str]
    scores: np.ndarray
    ci: np.ndarray
    num_target: int

    @property
    def ranking(self) -> list[dict[str, Any]]:
        order = np.argsort(-self.scores, kind="stable")
        return [{"source": self.sources[i], "score": round(float(self.scores[i]), 6),
                 "ci": [round(float(self.ci[i, 0]), 6), round(float(self.ci[i, 1]), 6)]} for i in order]

    @property
    def best(self) -> str:
        return self.ranking[0]["source"]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "ranking": self.ranking}


@dataclass
class SourceScores:
    """The full target x source matrix of average posteriors, with how it was computed.

    Attributes:
        rankings: One :class:`SourceRanking` per target.
        featurizer: ``fbank`` or the backbone's name.
        lid_accuracy: Accuracy of the source classifier on held-out source data (how well the
            sources can be told apart at all).
        num_source: Inputs per source.
    """

    rankings: list[SourceRanking]
    featurizer: str
    lid_accuracy: float
    num_source: dict[str, int] = field(default_factory=dict)

    @property
    def sources(self) -> list[str]:
        return self.rankings[0].sources

    @property
    def targets(self) -> list[str]:
        return [r.target for r in self.rankings]

    @property
    def matrix(self) -> np.ndarray:
        """Shape: ``(targets, sources)``."""
        return np.stack([r.scores for r in self.rankings])

    def to_dict(self) -> dict[str, Any]:
        return {"featurizer": self.featurizer, "lid_accuracy": round(self.lid_accuracy, 4), "num_source": self.num_source,
                "targets": [r.to_dict() for r in self.rankings]}

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        if path is not None:
            from mtransfer.atomic import atomic_write_bytes

            atomic_write_bytes(path, text.encode("utf-8"))
        return text

    def __repr__(self) -> str:
        return f"SourceScores(featurizer={self.featurizer!r}, lid_accuracy={self.lid_accuracy:.3f})\n{self.table()}"

    def table(self) -> str:
        """The matrix as text: one row per target, the best source marked with ``*``."""
        width = max(6, *(len(s) for s in self.sources))
        head = "target".ljust(10) + "".join(s.rjust(width + 2) for s in self.sources) + "   best"
        lines = [head]
        for r in self.rankings:
            best = int(np.argmax(r.scores))
            cells = "".join((f"{v:.3f}" + ("*" if j == best else " ")).rjust(width + 2) for j, v in enumerate(r.scores))
            lines.append(r.target.ljust(10) + cells + "   " + r.best)
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> Path:
        """A heatmap of the matrix (targets x sources) as a PNG."""
        from matplotlib.figure import Figure  # no pyplot: never switches a notebook's backend

        m = self.matrix
        fig = Figure(figsize=(1.2 + 0.9 * len(self.sources), 1.0 + 0.55 * len(self.targets)))
        ax = fig.add_subplot()
        im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=max(1e-9, float(m.max())))
        ax.set_xticks(range(len(self.sources)), self.sources)
        ax.set_yticks(range(len(self.targets)), self.targets)
        ax.set_xlabel("candidate source")
        ax.set_ylabel("target")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if m[i, j] > 0.6 * m.max() else "white")
        ax.set_title(f"average source posterior ({self.featurizer})", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        from mtransfer.plots import save_figure

        return save_figure(fig, path, dpi=120)


def _features(featurizer: Any, inputs: list[Any], cache: Any, batch_size: int) -> np.ndarray:
    if isinstance(featurizer, FbankFeaturizer):
        return featurizer(inputs)
    return cache.features(featurizer, inputs, batch_size=batch_size).all().numpy()


def _featurizer(backbone: Any, modality: str, adapter_kwargs: Mapping[str, Any] | None) -> tuple[Any, str]:
    """The feature extractor for ``backbone`` (fbank, a model by name, or an adapter) and its label."""
    if isinstance(backbone, str) and backbone == FBANK:
        return FbankFeaturizer(), FBANK
    if isinstance(backbone, (str, os.PathLike)):
        from mtransfer.model import build_adapter

        return build_adapter(modality, backbone, **dict(adapter_kwargs or {})).eval(), str(backbone)
    return backbone.eval(), getattr(backbone, "model_name_or_path", type(backbone).__name__)


def _ranking(target: str, post: np.ndarray, names: list[str], bootstrap: int, confidence: float,
             rng: np.random.Generator) -> SourceRanking:
    """A target's mean posterior per source, with a bootstrap interval over its inputs.

    Shape:
        post: ``(n_target, sources)``.
    """
    scores = post.mean(0)
    if bootstrap:
        alpha = (1 - confidence) / 2
        idx = rng.integers(0, len(post), size=(bootstrap, len(post)))
        means = post[idx].mean(1)  # (bootstrap, sources)
        ci = np.stack([np.quantile(means, alpha, axis=0), np.quantile(means, 1 - alpha, axis=0)], axis=1)
    else:
        ci = np.stack([scores, scores], axis=1)
    return SourceRanking(target, names, scores, ci, len(post))


def rank_sources(sources: Mapping[str, Any], targets: Mapping[str, Any], *, backbone: str | Any = FBANK,
                 modality: str = "audio", adapter_kwargs: Mapping[str, Any] | None = None, input_column: str = "audio",
                 C: float = 1.0, held_out: float = 0.2, bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None, batch_size: int = 32) -> SourceScores:
    """Rank candidate source datasets for each target by the average posterior of a source classifier.

    Args:
        sources: Name -> data (a list of inputs, a LabeledDataset, a folder or a data file); at
            least two.
        targets: Name -> data, one entry per target.
        backbone: ``"fbank"`` (log-mel statistics, no pretraining; audio only), a Hub id or folder
            loaded as ``modality``, or an :class:`~mtransfer.adapters.Adapter`.
        modality: Adapter for a backbone given by name (``audio``, ``text``, ``image``...).
        adapter_kwargs: Settings for that adapter.
        input_column: Column of inputs in data files.
        C: Inverse L2 strength of the logistic regression (on standardised features).
        held_out: Fraction of each source held out to report the classifier's accuracy (0: skip).
        bootstrap: Resamples of the target inputs for the confidence interval (0: none).
        confidence: Width of the interval.
        seed: Seeds the split and the bootstrap.
        cache_dir: Feature cache folder (backbone features are extracted once).
        batch_size: Backbone batch size.

    Raises:
        ValueError: Fewer than two sources, no targets, or empty data (named).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mtransfer.cache import FeatureCache

    if len(sources) < 2:
        raise ValueError(f"rank_sources needs at least two candidate sources; got {list(sources)}.")
    if not targets:
        raise ValueError("rank_sources needs at least one target.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: expected a fraction in (0, 1).")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap={bootstrap!r}: expected a number of resamples >= 0 (0: no interval).")
    source_inputs = {name: resolve_inputs(data, input_column) for name, data in sources.items()}
    few = {name: len(x) for name, x in source_inputs.items() if len(x) < (4 if held_out else 2)}
    if few:
        raise ValueError(f"sources with too few inputs {few}: each source needs at least {4 if held_out else 2} "
                         f"(some to train the source classifier{' and some held out' if held_out else ''}).")
    target_inputs = {name: resolve_inputs(data, input_column) for name, data in targets.items()}
    featurizer, label = _featurizer(backbone, modality, adapter_kwargs)
    for name, items in {**source_inputs, **target_inputs}.items():
        if hasattr(featurizer, "validate_inputs"):
            featurizer.validate_inputs(items, source=name)
    cache = FeatureCache(cache_dir)
    names = list(source_inputs)
    x = np.concatenate([_features(featurizer, source_inputs[n], cache, batch_size) for n in names])
    y = np.concatenate([np.full(len(source_inputs[n]), i) for i, n in enumerate(names)])

    def classifier():
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, class_weight="balanced"))

    accuracy = float("nan")
    if held_out > 0:
        xa, xb, ya, yb = train_test_split(x, y, test_size=held_out, stratify=y, random_state=seed)
        accuracy = float((classifier().fit(xa, ya).predict(xb) == yb).mean())
    clf = classifier().fit(x, y)
    rng = np.random.default_rng(seed)
    rankings = [_ranking(target, clf.predict_proba(_features(featurizer, items, cache, batch_size)), names, bootstrap,
                         confidence, rng) for target, items in target_inputs.items()]
    return SourceScores(rankings, label, accuracy, {n: len(v) for n, v in source_inputs.items()})
