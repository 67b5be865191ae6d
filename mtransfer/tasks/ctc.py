"""Speech recognition with CTC: a linear head over every encoder frame, a vocabulary of characters or phones."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.nn import functional as F

from mtransfer.speech.vocabulary import Vocabulary
from mtransfer.tasks.base import Task, register_task


@register_task
class CTC(Task):
    """Frames in, one symbol (or the blank) per frame out; decoded to transcripts, scored by WER / CER (PER)."""

    name = "ctc"
    reads_frames = True
    transcribes = True
    metrics = ("wer", "cer")  # from gathered per-utterance edit counts (mtransfer.speech.ctc); PER too for phones

    def check_head(self, config: Any) -> None:
        if config.hidden_sizes:
            raise ValueError("HeadConfig.hidden_sizes: a CTC head is one linear layer over the frames (no MLP).")
        if config.num_outputs < 2:
            raise ValueError(f"a CTC head needs the blank and at least one symbol, got num_outputs={config.num_outputs}.")

    def labels(self, labels: Any) -> tuple[Any, list[str]]:
        if isinstance(labels, Vocabulary):
            return labels, list(labels.symbols)
        if isinstance(labels, dict):
            vocab = Vocabulary.from_dict(labels)
            return vocab, list(vocab.symbols)
        if isinstance(labels, int) or labels is None:
            raise ValueError("task='ctc' needs its vocabulary as labels (e.g. labels=train.vocabulary).")
        vocab = Vocabulary([str(x) for x in labels])
        return vocab, list(vocab.symbols)

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor, head: Any, mask: torch.Tensor | None = None) -> torch.Tensor:
        return ctc_loss(outputs, labels, mask)

    def decisions(self, outputs: torch.Tensor, head: Any) -> torch.Tensor:
        return outputs.argmax(dim=-1)

    def scores(self, outputs: torch.Tensor, head: Any) -> torch.Tensor:
        return torch.softmax(outputs.float(), dim=-1)

    def decode(self, decisions: Sequence[Any], label_names: Sequence[str]) -> list[Any]:
        raise ValueError("a CTC model's outputs differ in length per input: use transcribe / transcribe_ids.")


def ctc_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean CTC loss per utterance, normalised by label length (blank 0, ``zero_infinity``).

    Shape:
        logits: ``(batch, frames, vocab)``. labels: ``(batch, max_label_length)``, padded with
        -100. mask: ``(batch, frames)``, 1 for the encoder's real output frames.
    """
    if logits.dim() != 3:
        raise ValueError(f"a CTC head's outputs are (batch, frames, vocab); got shape {tuple(logits.shape)}.")
    batch, frames = logits.shape[:2]
    input_lengths = mask.sum(1).long() if mask is not None else torch.full((batch,), frames, dtype=torch.long)
    valid = labels >= 0
    target_lengths = valid.sum(1)
    targets = labels[valid].long()  # concatenated, as ctc_loss takes them
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)
    with torch.backends.cudnn.flags(enabled=False):  # cuDNN's CTC needs int32 lengths on the CPU, and is not deterministic
        return F.ctc_loss(log_probs, targets, input_lengths.cpu(), target_lengths.cpu(), blank=0, reduction="mean",
                          zero_infinity=True)
