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
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from mtransfer.builtins import DEFAULT_SCORER

FBANK = "fbank"
MFCC = "mfcc"
MFCC_FRAMES = "mfcc-frames"
assert DEFAULT_SCORER in (MFCC, MFCC_FRAMES, FBANK)
MIN_INTERVAL_INPUTS = 5  # fewer target inputs than this: the bootstrap interval is reported as undefined
logger = logging.getLogger(__name__)


def _waveform(item: Any, sampling_rate: int) -> torch.Tensor:
    """Mono audio at ``sampling_rate``, padded to one 25 ms window, scaled like 16-bit PCM (Kaldi's convention)."""
    from mtransfer.media import load_audio

    wav = load_audio(item, sampling_rate)
    min_len = int(0.025 * sampling_rate)
    if wav.numel() < min_len:
        wav = torch.nn.functional.pad(wav, (0, min_len - wav.numel()))
    return wav[None] * 32768.0


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

        fb = torchaudio.compliance.kaldi.fbank(_waveform(item, self.sampling_rate), num_mel_bins=self.num_mel_bins,
                                               sample_frequency=self.sampling_rate, dither=0.0)
        return torch.cat([fb.mean(0), fb.std(0, unbiased=False)]).numpy()

    def __call__(self, inputs: Sequence[Any]) -> np.ndarray:
        return np.stack([self.utterance(x) for x in inputs]).astype(np.float32)


class MfccFeaturizer:
    """Cepstral features that hold up when the voice changes from one utterance to the next.

    ``num_ceps`` MFCCs (Kaldi-compatible, 25 ms windows, 10 ms hop, no energy term) and their
    deltas. Per utterance (``mfcc``): the mean and standard deviation of the cepstra and the
    standard deviation of the deltas, ``3 * num_ceps`` numbers; cepstra are less tied to a
    voice's pitch and formant scale than filterbank energies, and the delta spread describes
    how fast the spectrum moves (rhythm) rather than whose vocal tract it is. Per frame
    (``mfcc-frames``, the lecture's frame-level classifier): cepstra with per-utterance mean and
    variance normalisation (removing the speaker and channel offset), deltas and delta-deltas,
    stacked over ``context`` frames either side; every ``stride``-th frame is kept.

    Shape:
        :meth:`__call__` returns ``(len(inputs), 3 * num_ceps)``; :meth:`frames` returns
        ``(frames, 3 * num_ceps * (2 * context + 1))``.
    """

    def __init__(self, sampling_rate: int = 16_000, num_ceps: int = 20, frame_level: bool = False, context: int = 2,
                 stride: int = 4) -> None:
        self.sampling_rate, self.num_ceps, self.frame_level = sampling_rate, num_ceps, frame_level
        self.context, self.stride = context, stride
        self.name = MFCC_FRAMES if frame_level else MFCC

    def _cepstra(self, item: Any) -> tuple[torch.Tensor, torch.Tensor]:
        import torchaudio

        mfcc = torchaudio.compliance.kaldi.mfcc(_waveform(item, self.sampling_rate), num_ceps=self.num_ceps,
                                                use_energy=False, sample_frequency=self.sampling_rate, dither=0.0)
        return mfcc, torchaudio.functional.compute_deltas(mfcc.T).T

    def utterance(self, item: Any) -> np.ndarray:
        mfcc, delta = self._cepstra(item)
        return torch.cat([mfcc.mean(0), mfcc.std(0, unbiased=False), delta.std(0, unbiased=False)]).numpy()

    def frames(self, item: Any) -> np.ndarray:
        import torchaudio

        mfcc, delta = self._cepstra(item)
        mfcc = (mfcc - mfcc.mean(0)) / (mfcc.std(0, unbiased=False) + 1e-5)
        x = torch.cat([mfcc, delta, torchaudio.functional.compute_deltas(delta.T).T], dim=1)
        padded = torch.nn.functional.pad(x.T, (self.context, self.context), mode="replicate").T
        stacked = torch.cat([padded[i:i + len(x)] for i in range(2 * self.context + 1)], dim=1)
        return stacked[::self.stride].numpy().astype(np.float32)

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
    """One target's scores: the average posterior of each source, with a bootstrap confidence interval.

    ``ci`` rows are NaN (``ranking``'s ``"ci"`` None) where no interval was asked for or the target has
    fewer than ``MIN_INTERVAL_INPUTS`` inputs, too few for a resampled interval to mean anything.
    """

    target: str
    sources: list[str]
    scores: np.ndarray
    ci: np.ndarray
    num_target: int

    @property
    def ranking(self) -> list[dict[str, Any]]:
        order = np.argsort(-self.scores, kind="stable")
        return [{"source": self.sources[i], "score": round(float(self.scores[i]), 6),
                 "ci": None if np.isnan(self.ci[i]).any() else [round(float(self.ci[i, 0]), 6), round(float(self.ci[i, 1]), 6)]}
                for i in order]

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
        """The matrix as text: one row per target, each score with its 95% bootstrap interval (``[-]`` where it is
        undefined), the best source marked with ``*``."""
        def cell(r: SourceRanking, j: int, best: int) -> str:
            lo, hi = r.ci[j]
            interval = "[-]" if np.isnan(lo) else f"[{lo:.2f},{hi:.2f}]"
            return f"{r.scores[j]:.3f} {interval}" + ("*" if j == best else " ")

        width = max(18, *(len(s) for s in self.sources))
        head = "target".ljust(10) + "".join(s.rjust(width + 2) for s in self.sources) + "   best"
        lines = [head]
        for r in self.rankings:
            best = int(np.argmax(r.scores))
            cells = "".join(cell(r, j, best).rjust(width + 2) for j in range(len(r.scores)))
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
    if isinstance(featurizer, (FbankFeaturizer, MfccFeaturizer)):
        return featurizer(inputs)
    return cache.features(featurizer, inputs, batch_size=batch_size).all().numpy()


def _frame_rows(featurizer: MfccFeaturizer, inputs: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Every kept frame of every input, and the input each frame came from."""
    frames = [featurizer.frames(x) for x in inputs]
    return np.concatenate(frames), np.repeat(np.arange(len(inputs)), [len(f) for f in frames])


def _featurizer(backbone: Any, modality: str, adapter_kwargs: Mapping[str, Any] | None) -> tuple[Any, str]:
    """The feature extractor for ``backbone`` (fbank, mfcc, a model by name, or an adapter) and its label."""
    if isinstance(backbone, str) and backbone in (FBANK, MFCC, MFCC_FRAMES):
        made = FbankFeaturizer() if backbone == FBANK else MfccFeaturizer(frame_level=backbone == MFCC_FRAMES)
        return made, backbone
    if isinstance(backbone, (str, os.PathLike)):
        from mtransfer.adapters.base import build_adapter

        return build_adapter(modality, backbone, **dict(adapter_kwargs or {})).eval(), str(backbone)
    return backbone.eval(), getattr(backbone, "model_name_or_path", type(backbone).__name__)


C_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


def _rows(featurizer: Any, inputs: list[Any], cache: Any, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Classifier rows and the input each came from: one row per input, or one per kept frame."""
    if isinstance(featurizer, MfccFeaturizer) and featurizer.frame_level:
        return _frame_rows(featurizer, inputs)
    return _features(featurizer, inputs, cache, batch_size), np.arange(len(inputs))


def _per_input(clf: Any, rows: np.ndarray, owner: np.ndarray, frames: bool) -> np.ndarray:
    """Each input's source posterior, inputs in index order: its row's, or the normalised geometric mean
    of its frames' (the mean log posterior: frames vote as independent evidence). Shape: ``(inputs, sources)``."""
    if not frames:
        return clf.predict_proba(rows)[np.argsort(owner)]
    inputs, index = np.unique(owner, return_inverse=True)
    sums = np.zeros((len(inputs), len(clf.classes_)))
    np.add.at(sums, index, np.log(np.clip(clf.predict_proba(rows), 1e-12, None)))
    mean = sums / np.bincount(index)[:, None]
    post = np.exp(mean - mean.max(1, keepdims=True))
    return post / post.sum(1, keepdims=True)


def _source_classifier(x: np.ndarray, y: np.ndarray, groups: np.ndarray, C: float | str, seed: int,
                       frames: bool = False) -> Any:
    """Standardised features, then a classifier of the sources.

    Utterance features: multinomial logistic regression with balanced classes; ``C="cv"`` picks
    the inverse L2 strength from :data:`C_GRID` by 5-fold log loss, folds split by input. Frames:
    a linear model on single frames stays at chance (measured: 0.13 held-out utterance accuracy
    for 6 languages), so frames get a one-hidden-layer network (256 ReLU units, early stopping on
    10% of the frames; ``C`` is not used).
    """
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if frames:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        net = MLPClassifier((256,), alpha=1e-3, max_iter=30, early_stopping=True, random_state=seed)
        with warnings.catch_warnings():  # 30 passes over the frames is the budget, not a failure to converge
            warnings.simplefilter("ignore", ConvergenceWarning)
            return make_pipeline(StandardScaler(), net).fit(x, y)
    if C != "cv":
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, class_weight="balanced")).fit(x, y)
    per_class = min(len(np.unique(groups[y == k])) for k in np.unique(y))
    folds = StratifiedGroupKFold(n_splits=max(2, min(5, per_class)), shuffle=True, random_state=seed)
    model = LogisticRegressionCV(Cs=list(C_GRID), l1_ratios=(0.0,), cv=list(folds.split(x, y, groups)),
                                 scoring="neg_log_loss", max_iter=5000, class_weight="balanced",
                                 use_legacy_attributes=False)
    return make_pipeline(StandardScaler(), model).fit(x, y)


def _ranking(target: str, post: np.ndarray, names: list[str], bootstrap: int, confidence: float,
             rng: np.random.Generator) -> SourceRanking:
    """A target's mean posterior per source, with a bootstrap interval over its inputs.

    Shape:
        post: ``(n_target, sources)``.
    """
    scores = post.mean(0)
    if bootstrap and len(post) < MIN_INTERVAL_INPUTS:
        logger.warning("target %s: %d input(s), fewer than the %d a bootstrap interval needs; its interval is undefined",
                       target, len(post), MIN_INTERVAL_INPUTS)
    if bootstrap and len(post) >= MIN_INTERVAL_INPUTS:
        alpha = (1 - confidence) / 2
        idx = rng.integers(0, len(post), size=(bootstrap, len(post)))
        means = post[idx].mean(1)  # (bootstrap, sources)
        ci = np.stack([np.quantile(means, alpha, axis=0), np.quantile(means, 1 - alpha, axis=0)], axis=1)
    else:  # no interval: not asked for, or too few inputs to resample (one utterance gave [0.61, 0.61])
        ci = np.full((len(scores), 2), np.nan)
    return SourceRanking(target, names, scores, ci, len(post))


def rank_sources(sources: Mapping[str, Any], targets: Mapping[str, Any], *, backbone: str | Any = DEFAULT_SCORER,
                 modality: str = "audio", adapter_kwargs: Mapping[str, Any] | None = None, input_column: str = "audio",
                 C: float | str = "cv", held_out: float = 0.2, bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None, batch_size: int = 32) -> SourceScores:
    """Rank candidate source datasets for each target by the average posterior of a source classifier.

    Args:
        sources: Name -> data (a list of inputs, a LabeledDataset, a folder or a data file); at
            least two.
        targets: Name -> data, one entry per target.
        backbone: Without pretraining (audio only): ``"mfcc"`` (cepstral mean / spread and delta
            spread per utterance; the default), ``"mfcc-frames"`` (a network on normalised cepstral
            frames in context, posteriors per frame: the lecture's frame-level classifier) or
            ``"fbank"`` (log-mel statistics); else a Hub id or folder loaded as ``modality``, or an
            :class:`~mtransfer.adapters.Adapter`.
        modality: Adapter for a backbone given by name (``audio``, ``text``, ``image``...).
        adapter_kwargs: Settings for that adapter.
        input_column: Column of inputs in data files.
        C: Inverse L2 strength of the logistic regression (on standardised features), or ``"cv"``:
            chosen from :data:`C_GRID` by 5-fold cross-validated log loss on the sources.
        held_out: Fraction of each source held out to report the classifier's accuracy (0: skip).
        bootstrap: Resamples of the target inputs for the confidence interval (0: none).
        confidence: Width of the interval.
        seed: Seeds the split and the bootstrap.
        cache_dir: Feature cache folder (backbone features are extracted once).
        batch_size: Backbone batch size.

    Raises:
        ValueError: Fewer than two sources, no targets, or empty data (named).
    """
    from sklearn.model_selection import train_test_split

    from mtransfer.cache import FeatureCache

    if len(sources) < 2:
        raise ValueError(f"rank_sources needs at least two candidate sources; got {list(sources)}.")
    if not targets:
        raise ValueError("rank_sources needs at least one target.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: expected a fraction in (0, 1).")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap={bootstrap!r}: expected a number of resamples >= 0 (0: no interval).")
    if not (C == "cv" or (isinstance(C, (int, float)) and not isinstance(C, bool) and C > 0)):
        raise ValueError(f"C={C!r}: expected a positive number, or 'cv' to choose it by cross-validation on the sources.")
    source_inputs = {name: resolve_inputs(data, input_column) for name, data in sources.items()}
    least = 4 if held_out else 2
    few = {name: len(x) for name, x in source_inputs.items() if len(x) < least}
    if few:
        raise ValueError(f"sources with too few inputs {few}: each source needs at least {least} "
                         f"(some to train the source classifier{' and some held out' if held_out else ''}).")
    target_inputs = {name: resolve_inputs(data, input_column) for name, data in targets.items()}
    featurizer, label = _featurizer(backbone, modality, adapter_kwargs)
    for name, items in {**source_inputs, **target_inputs}.items():
        if hasattr(featurizer, "validate_inputs"):
            featurizer.validate_inputs(items, source=name)
    cache = FeatureCache(cache_dir)
    names = list(source_inputs)
    every = [x for n in names for x in source_inputs[n]]
    y = np.concatenate([np.full(len(source_inputs[n]), i) for i, n in enumerate(names)])
    rows, owner = _rows(featurizer, every, cache, batch_size)
    frames = isinstance(featurizer, MfccFeaturizer) and featurizer.frame_level
    accuracy = float("nan")
    if held_out > 0:
        train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=held_out, stratify=y, random_state=seed)
        keep = np.isin(owner, train_idx)
        clf = _source_classifier(rows[keep], y[owner[keep]], owner[keep], C, seed, frames)
        post = _per_input(clf, rows[~keep], owner[~keep], frames)  # held-out inputs, in index order
        accuracy = float((post.argmax(1) == y[np.unique(owner[~keep])]).mean())
    clf = _source_classifier(rows, y[owner], owner, C, seed, frames)
    rng = np.random.default_rng(seed)
    rankings = []
    for target, items in target_inputs.items():
        t_rows, t_owner = _rows(featurizer, items, cache, batch_size)
        rankings.append(_ranking(target, _per_input(clf, t_rows, t_owner, frames), names, bootstrap, confidence, rng))
    return SourceScores(rankings, label, accuracy, {n: len(v) for n, v in source_inputs.items()})
