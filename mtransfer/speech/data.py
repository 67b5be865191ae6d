"""Transcripts as CTC targets (the ``ctc`` task's side of :func:`mtransfer.data.load_labeled`), and their check
against the audio's length."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from mtransfer.heads import LABEL_PAD
from mtransfer.speech.vocabulary import Vocabulary

logger = logging.getLogger(__name__)
CHOICES = {"bad_transcripts": ("error", "skip"), "unknown_units": ("count", "error", "skip")}


def as_vocabulary(spec: Any, texts: Sequence[str]) -> tuple[Vocabulary, bool]:
    """``(vocabulary, built from texts?)`` from a Vocabulary, its dict, ``"characters"`` or ``"phones:<voice>"``."""
    if isinstance(spec, Vocabulary):
        return spec, False
    if isinstance(spec, dict):
        return Vocabulary.from_dict(spec), False
    text = "characters" if spec is None else str(spec)
    kind, _, language = text.partition(":")
    if kind == "characters" and not language:
        return Vocabulary.from_texts(texts), True
    if kind == "phones" and language:
        return Vocabulary.from_texts(texts, kind="phones", language=language), True
    raise ValueError(f"vocabulary={spec!r}: expected a Vocabulary, 'characters' or 'phones:<espeak voice>' (e.g. phones:hi).")


@dataclass
class EncodedTranscripts:
    """Transcripts as padded CTC targets, with what evaluation needs (the rows kept, the references).

    Shape:
        targets: ``(len(rows), longest)`` symbol ids, padded with ``LABEL_PAD`` (-100).
    """

    rows: list[int]  # the input rows kept, in order
    targets: torch.Tensor
    vocabulary: Vocabulary
    references: list[str]  # normalised transcripts (WER / CER references)
    reference_units: list[list[str]]  # their units (PER references for phones)
    unknown_units: int  # units outside a given vocabulary, encoded as [UNK]


def encode_transcripts(texts: Sequence[str], column: str, name: str, vocabulary: Any,
                       bad_transcripts: str = "error", unknown_units: str = "count") -> EncodedTranscripts:
    """Encode transcripts as padded CTC targets (-100 padding), checking each row.

    Raises:
        ValueError: An empty transcript (``bad_transcripts="error"``), units outside a given
            vocabulary (``unknown_units="error"``), or nothing left to train on.
    """
    for key, value in (("bad_transcripts", bad_transcripts), ("unknown_units", unknown_units)):
        if value not in CHOICES[key]:
            raise ValueError(f"{key}={value!r}; expected one of {', '.join(CHOICES[key])}.")
    vocab, built = as_vocabulary(vocabulary, texts)
    units = vocab.units_of(texts)
    keep, empty, unknown_rows, unknown_total = [], [], [], 0
    encoded = []
    for i, u in enumerate(units):
        ids, unknown = vocab.encode_units(u)
        if not ids:
            empty.append(i)
            continue
        if unknown:
            unknown_rows.append(i)
            unknown_total += unknown
            if unknown_units == "skip":
                continue
        keep.append(i)
        encoded.append(ids)
    if empty:
        shown = ", ".join(str(i) for i in empty[:10])
        if bad_transcripts == "error":
            raise ValueError(f"{name}: column {column!r} rows {shown}{' ...' if len(empty) > 10 else ''} have an empty "
                             "transcript after normalisation (nothing to recognise); fix them or pass "
                             "bad_transcripts='skip' (data.bad_transcripts: skip).")
        logger.warning("%s: left out %d rows with an empty transcript (rows %s)", name, len(empty), shown)
    if unknown_rows:
        missing = sorted({x for i in unknown_rows for x in units[i] if x not in vocab.symbols})
        what = (f"{name}: column {column!r}: {unknown_total} units in {len(unknown_rows)} rows (first row "
                f"{unknown_rows[0]}) are not in the vocabulary: {missing[:20]}")
        if unknown_units == "error":
            raise ValueError(what + "; pass unknown_units='count' (they become [UNK]) or 'skip'.")
        logger.warning("%s; %s", what, "those rows are left out" if unknown_units == "skip" else "counted as [UNK]")
    if not keep:
        raise ValueError(f"{name}: no usable transcripts in column {column!r}.")
    width = max(len(e) for e in encoded)
    targets = torch.full((len(encoded), width), LABEL_PAD, dtype=torch.long)
    for j, ids in enumerate(encoded):
        targets[j, :len(ids)] = torch.tensor(ids)
    if built:
        logger.info("%s: %s vocabulary of %d units from %d transcripts", name, vocab.kind, len(vocab), len(keep))
    return EncodedTranscripts(keep, targets, vocab, [" ".join("".join(units[i]).replace("|", " ").split()) for i in keep],
                              [units[i] for i in keep], unknown_total)


def check_transcript_lengths(adapter: Any, dataset: Any, where: str) -> None:
    """Stop before training when a transcript needs more CTC frames than its audio gives.

    CTC emits one symbol per frame and needs a blank between two equal symbols, so a clip of
    ``F`` encoder frames can carry at most ``F`` symbols (fewer with repeats). Such rows would
    only ever give an infinite loss (zeroed by ``zero_infinity``): they are named here instead.
    """
    lengths_fn = getattr(adapter, "output_frames", None)
    if lengths_fn is None or not hasattr(adapter, "num_samples"):
        return
    bad = []
    for i, (item, target) in enumerate(zip(dataset.inputs, dataset.targets)):
        ids = target[target >= 0].tolist()
        need = len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)
        samples = max(adapter.num_samples(item), getattr(adapter, "min_samples", 1))
        frames = int(lengths_fn(samples))
        if need > frames:
            bad.append((i, need, frames))
    if bad:
        shown = "; ".join(f"row {i}: {n} symbols for {f} frames" for i, n, f in bad[:5])
        raise ValueError(f"{where}: {len(bad)} transcripts are longer than the encoder's output for their audio ({shown}"
                         f"{' ...' if len(bad) > 5 else ''}); check that transcripts and audio match, or leave these "
                         "rows out (dataset.subset).")
