"""Character error rate: character edits / reference characters, over the whole corpus (jiwer)."""

import jiwer

from mtransfer.metrics import jiwer_metric


class Cer(jiwer_metric.ErrorRate):
    metric_name = "cer"
    units = "characters"
    description = "Character error rate: character edits / reference characters, over the whole corpus (jiwer)."
    rate_fn = jiwer.cer
