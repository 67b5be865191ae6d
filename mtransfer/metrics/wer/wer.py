"""Word error rate: word edits / reference words, over the whole corpus (jiwer)."""

import jiwer

from mtransfer.metrics import jiwer_metric


class Wer(jiwer_metric.ErrorRate):
    metric_name = "wer"
    units = "words"
    description = "Word error rate: word edits / reference words, over the whole corpus (jiwer)."
    rate_fn = jiwer.wer
