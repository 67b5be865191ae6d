"""Rank trained CTC source models for a target corpus by what each does on the target: model-based estimates.

A language-ID scorer looks only at the audio: it cannot see that a source model is weak (trained
on too little, stopped too early). When the source models exist (the transfer matrix, a user's
own checkpoints), three cheap estimates look at them on the target's small labelled data:

- ``head`` (a head probe): each source's encoder frozen, a new CTC head for the target's
  vocabulary (the trained rows of the symbols both vocabularies share copied), trained for a few
  epochs on the target's training utterances from cached frames (one encoder pass over the
  target, then the head alone), scored by its best CER on the target's validation utterances
  (never an all-blank epoch). It is the first, frozen part of the transfer it predicts.
- ``zero-shot``: the source model as it is, transcribing the target's validation audio with its
  own vocabulary; symbols it lacks count as errors. One encoder pass, no training.
- ``quality``: the source model's own best validation CER on its own language (its run record):
  says nothing about the target, only how strong the source is.

Every score is ``1 - CER`` (higher: a better source). :func:`combine` averages the ranks of
several scores (a language-ID posterior with a model-based estimate, say).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mtransfer.model import TransferModel
from mtransfer.record import RECORD_FILE, RunRecord
from mtransfer.speech.ctc import edit_counts, error_rates
from mtransfer.training import Trainer, TrainingArguments

METHODS = ("head", "zero-shot", "quality")


def _load(model: str | Path | TransferModel) -> TransferModel:
    loaded = model if isinstance(model, TransferModel) else TransferModel.from_pretrained(model)
    if not loaded.head.kind.transcribes:
        raise ValueError(f"{getattr(loaded, 'loaded_from', model)}: a {loaded.task} model; ranking source models for a "
                         "speech target needs CTC models (trained with --task ctc).")
    return loaded


def head_probe_cer(model: str | Path | TransferModel, train: Any, validation: Any, *, epochs: int = 4,
                   learning_rate: float = 5e-3, batch_size: int = 8, seed: int = 0, cache_dir: str | None = None,
                   num_threads: int | None = None) -> float:
    """The best validation CER of a new CTC head on ``model``'s frozen encoder, trained ``epochs`` on ``train``.

    ``train`` and ``validation`` are CTC datasets of the target (one vocabulary); the head starts
    from the source's trained rows for the symbols both vocabularies share.
    """
    probe = _load(model).with_new_head(train.vocabulary, seed=seed)
    with tempfile.TemporaryDirectory(prefix="mtransfer-head-probe-") as out:
        args = TrainingArguments(output_dir=out, strategy="frozen", num_epochs=epochs, learning_rate=learning_rate,
                                 batch_size=batch_size, eval_batch_size=16, metric_for_best_model="cer", seed=seed,
                                 progress_bar=False, report_to=[], plot=False, save_checkpoints=False,
                                 show_transcripts=False, cache_dir=cache_dir, num_threads=num_threads,
                                 lr_schedule="constant")
        result = Trainer(probe, args, train, validation).train()
    return float(result.best_value) if result.best_value is not None else 1.0


def zero_shot_cer(model: str | Path | TransferModel, validation: Any, *, batch_size: int = 16) -> float:
    """CER of ``model``'s own transcripts of the target's validation audio against the target's transcripts."""
    loaded = _load(model)
    hypotheses = loaded.transcribe(list(validation.inputs), batch_size=batch_size)
    return float(error_rates(edit_counts(list(validation.references), hypotheses))["cer"])


def quality_cer(model: str | Path) -> float:
    """The source model's own best validation CER, from the run record beside its model folder (``RUN/model``)."""
    record = Path(model).parent / RECORD_FILE
    if not record.is_file():
        raise FileNotFoundError(f"{record}: no run record beside the model folder {model}; the 'quality' estimate reads "
                                "the source run's own validation CER from it.")
    final = RunRecord.load(record).final_eval
    if "eval_cer" not in final:
        raise ValueError(f"{record}: no validation CER (eval_cer) in the run record.")
    return float(final["eval_cer"])


def rank_source_models(models: Mapping[str, str | Path], train: Any, validation: Any, *,
                       methods: Sequence[str] = ("head",), epochs: int = 4, learning_rate: float = 5e-3,
                       batch_size: int = 8, seed: int = 0, cache_dir: str | None = None,
                       num_threads: int | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Every method's score (``1 - CER``) and cost for every source model: ``{method: {source: {"score", "cer",
    "seconds"}}}``.

    Args:
        models: Source name -> model folder (``RUN/model``, written by mtransfer's Trainer).
        train, validation: The target's CTC datasets (one vocabulary; ``validation`` scores).
        methods: Any of ``head``, ``zero-shot``, ``quality`` (see the module docstring).
        epochs, learning_rate, batch_size: The head probe's training.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"rank_source_models methods={unknown[0]!r}: expected some of {', '.join(METHODS)}.")
    if len(models) < 2:
        raise ValueError(f"rank_source_models needs at least two source models; got {list(models)}.")
    for name, folder in models.items():
        if not (Path(folder) / "config.json").is_file():
            raise FileNotFoundError(f"source {name!r}: {folder} is not a model folder (no config.json).")
    out: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
    for name, folder in models.items():
        for method in methods:
            began = time.perf_counter()
            if method == "head":
                cer = head_probe_cer(folder, train, validation, epochs=epochs, learning_rate=learning_rate,
                                     batch_size=batch_size, seed=seed, cache_dir=cache_dir, num_threads=num_threads)
            elif method == "zero-shot":
                cer = zero_shot_cer(folder, validation)
            else:
                cer = quality_cer(folder)
            out[method][name] = {"score": 1.0 - cer, "cer": cer, "seconds": round(time.perf_counter() - began, 3)}
    return out


def combine(*scores: Mapping[str, float]) -> dict[str, float]:
    """The mean of each score's normalised rank (0: last, 1: first; ties share their mean rank) per source.

    >>> combine({"a": 0.9, "b": 0.1, "c": 0.5}, {"a": 0.2, "b": 0.3, "c": 0.9})
    {'a': 0.5, 'b': 0.25, 'c': 0.75}
    """
    from scipy.stats import rankdata

    names = sorted(set.intersection(*(set(s) for s in scores)))
    if len(names) < 2:
        raise ValueError("combine needs at least two sources scored by every ranker.")
    ranks = [(rankdata([s[n] for n in names]) - 1) / (len(names) - 1) for s in scores]
    mean = np.mean(ranks, axis=0)
    return {n: float(v) for n, v in zip(names, mean)}
