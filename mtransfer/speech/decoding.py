"""CTC beam search (``pyctcdecode``), with a KenLM n-gram language model when one is given.

Greedy decoding (:func:`mtransfer.speech.ctc.greedy_ids`) takes the best symbol per frame; a
beam search keeps the ``beam_width`` best prefixes instead and, with a word n-gram, weighs each
word by the language model: ``score = log p_ctc + alpha * log p_lm + beta * words``. Without a
language model it only searches more widely; the gain then is usually small.

>>> decoder = BeamSearchDecoder(model.vocabulary, beam_width=32, lm="words.arpa", alpha=0.5, beta=1.0)  # doctest: +SKIP
>>> model.transcribe(["clip.wav"], decoder=decoder)  # doctest: +SKIP
['নমস্কার পৃথিবী']

``pyctcdecode`` 0.5 declares ``numpy<2`` but runs on numpy 2, so ``scripts/setup.sh`` installs it
(and ``pygtrie``) with ``--no-deps``; ``kenlm`` (built from source) is installed when it builds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from mtransfer.speech.vocabulary import DELIMITER, UNK, Vocabulary

UNK_MARK = "⁇"  # what pyctcdecode writes for an unknown symbol; mapped back to [UNK]


def _require(module: str, why: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{why} needs the `{module}` package: pip install --no-deps pyctcdecode==0.5.0 pygtrie "
                          f"{'kenlm' if module == 'kenlm' else ''} (scripts/setup.sh installs it).") from None


class BeamSearchDecoder:
    """CTC prefix beam search over a model's vocabulary.

    Args:
        vocabulary: The CTC model's :class:`~mtransfer.speech.vocabulary.Vocabulary` (id 0 is the blank).
        beam_width: Prefixes kept per frame (1 is close to greedy).
        lm: A KenLM model (``.arpa`` or KenLM ``.bin``) over words as the transcripts spell them
            (after the vocabulary's normalisation); None: beam search alone.
        alpha: Language-model weight. beta: Word-insertion bonus.
        unigrams: The LM's words (read from an ``.arpa`` file when not given; needed for a ``.bin``).
    """

    def __init__(self, vocabulary: Vocabulary, *, beam_width: int = 32, lm: str | os.PathLike | None = None,
                 alpha: float = 0.5, beta: float = 1.0, unigrams: Sequence[str] | None = None) -> None:
        if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
            raise ValueError(f"beam_width={beam_width!r}: expected an integer >= 1.")
        pyctcdecode = _require("pyctcdecode", "beam search")
        if lm is not None:
            lm = Path(lm).expanduser()
            if not lm.is_file():
                raise FileNotFoundError(f"--lm {lm}: no such KenLM file (.arpa or .bin).")
            _require("kenlm", f"the language model {lm}")
        self.vocabulary = vocabulary
        self.beam_width = beam_width
        self.lm = str(lm) if lm is not None else None
        self.alpha, self.beta = float(alpha), float(beta)
        self._longest_first = sorted((s for s in vocabulary.symbols[1:] if s != DELIMITER), key=len, reverse=True)
        labels = ["" if i == 0 else UNK_MARK if s == UNK else " " if s == DELIMITER else s
                  for i, s in enumerate(vocabulary.symbols)]
        quiet = logging.getLogger("pyctcdecode")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # notes about multi-character labels and unigram lists
        try:
            self._decoder = pyctcdecode.build_ctcdecoder(labels, kenlm_model_path=self.lm,
                                                         unigrams=list(unigrams) if unigrams is not None else None,
                                                         alpha=self.alpha, beta=self.beta)
        except Exception as err:  # noqa: BLE001 - a bad LM file, named
            raise ValueError(f"cannot build a beam-search decoder{f' with {self.lm}' if self.lm else ''}: {err}") from None
        finally:
            quiet.setLevel(level)

    def decode(self, logits: torch.Tensor, mask: torch.Tensor | None = None) -> list[str]:
        """Transcripts of a batch of frame logits (padding frames, where ``mask`` is 0, left out).

        Shape:
            logits: ``(batch, frames, vocab)``; mask: ``(batch, frames)``.
        """
        if logits.shape[-1] != len(self.vocabulary):
            raise ValueError(f"logits have {logits.shape[-1]} symbols; the decoder's vocabulary has {len(self.vocabulary)}.")
        logp = logits.detach().float().log_softmax(-1).cpu().numpy()
        lengths = mask.sum(1).cpu().tolist() if mask is not None else [logp.shape[1]] * logp.shape[0]
        out = []
        for row, n in zip(logp, lengths):
            text = self._decoder.decode(row[:int(n)], beam_width=self.beam_width) if int(n) else ""
            out.append(" ".join(text.replace(UNK_MARK, UNK).split()))
        return out

    def units(self, text: str) -> list[str]:
        """A decoded transcript back in the vocabulary's units (longest match), for phone error rates."""
        out: list[str] = []
        for w, word in enumerate(text.split()):
            if w:
                out.append(DELIMITER)
            i = 0
            while i < len(word):
                match = next((s for s in self._longest_first if word.startswith(s, i)), word[i])
                out.append(match)
                i += len(match)
        return out

    def describe(self) -> dict[str, Any]:
        return {"decoder": "beam", "beam_width": self.beam_width, "lm": self.lm, "alpha": self.alpha, "beta": self.beta}
