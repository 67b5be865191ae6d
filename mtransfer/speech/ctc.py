"""CTC decoding and error rates.

Greedy decoding takes the best symbol per valid frame, merges repeats and drops blanks
(id 0). Error rates are corpus-level, as ``jiwer`` computes them: the edits of every utterance
summed, over the reference words / characters / units summed. :func:`edit_counts` gives the
per-utterance counts, so several processes can gather them (each utterance once) and
:func:`error_rates` gives the same rates as one process over all utterances.

``length_ratio`` (hypothesis units over reference units) tells a model on CTC's all-blank
plateau (near 0: it emits almost nothing but blanks) from one that transcribes, whatever the
error rates say: an all-blank epoch scores CER 1.0, and one that emits a few frequent symbols
scores a little below it, better than many models that have started to learn.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

COUNT_COLUMNS = ("word_errors", "words", "char_errors", "chars", "unit_errors", "units", "hypothesis_units")


def greedy_ids(logits: torch.Tensor, mask: torch.Tensor | None = None) -> list[list[int]]:
    """Best symbol per valid frame, not yet collapsed.

    Shape:
        logits: ``(batch, frames, vocab)``. mask: ``(batch, frames)``, 1 for real frames.
    """
    best = logits.argmax(dim=-1).cpu()
    lengths = mask.sum(1).cpu().tolist() if mask is not None else [best.shape[1]] * best.shape[0]
    return [best[i, :int(n)].tolist() for i, n in enumerate(lengths)]


def collapse(ids: Sequence[int]) -> list[int]:
    """CTC's rule: merge repeats, then drop blanks (0)."""
    out, previous = [], None
    for i in ids:
        if i != previous and i != 0:
            out.append(int(i))
        previous = i
    return out


def _edits(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Substitutions + deletions + insertions between two token sequences (``jiwer``'s alignment)."""
    import jiwer

    if not reference or not hypothesis:
        return max(len(reference), len(hypothesis))
    vocab = {t: chr(0xE000 + i) for i, t in enumerate(dict.fromkeys([*reference, *hypothesis]))}
    out = jiwer.process_words(" ".join(vocab[t] for t in reference), " ".join(vocab[t] for t in hypothesis))
    return int(out.substitutions + out.deletions + out.insertions)


def edit_counts(references: Sequence[str], hypotheses: Sequence[str],
                reference_units: Sequence[Sequence[str]] | None = None,
                hypothesis_units: Sequence[Sequence[str]] | None = None) -> np.ndarray:
    """Per utterance: word edits, reference words, character edits, reference characters, unit edits, units, and the
    hypothesis's units.

    Words are split on whitespace; characters are those of the transcript with spaces (as
    ``jiwer.cer``); units are the vocabulary's units (phones for a phone vocabulary; the
    characters otherwise), counted without word delimiters. Shape: ``(n, 7)``.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses.")
    rows = []
    for k, (ref, hyp) in enumerate(zip(references, hypotheses)):
        rw, hw = ref.split(), hyp.split()
        rc, hc = list(" ".join(rw)), list(" ".join(hw))
        ru = [u for u in reference_units[k] if u != "|"] if reference_units is not None else [c for c in rc if c != " "]
        hu = [u for u in hypothesis_units[k] if u != "|"] if hypothesis_units is not None else [c for c in hc if c != " "]
        rows.append([_edits(rw, hw), len(rw), _edits(rc, hc), len(rc), _edits(ru, hu), len(ru), len(hu)])
    return np.asarray(rows, dtype=np.int64).reshape(-1, len(COUNT_COLUMNS))


def error_rates(counts: np.ndarray, units: str = "characters") -> dict[str, float]:
    """WER and CER (and PER for phone units) from summed :func:`edit_counts`, and the length ratio (hypothesis units
    over reference units)."""
    total = np.asarray(counts).reshape(-1, len(COUNT_COLUMNS)).sum(0)
    rate = lambda e, n: float(e) / float(n) if n else float(e > 0)  # noqa: E731
    out = {"wer": rate(total[0], total[1]), "cer": rate(total[2], total[3]),
           "length_ratio": float(total[6]) / float(total[5]) if total[5] else 1.0}
    if units == "phones":
        out["per"] = rate(total[4], total[5])
    return out
