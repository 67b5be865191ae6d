"""Base class for the ``evaluate`` modules of speech error rates shipped here (``wer``, ``cer``), computed with jiwer.

``evaluate.load("wer")`` fetches its module from the Hub, which fails offline; these give the
same corpus-level rates (edits of every utterance summed over reference words or characters).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import datasets
import evaluate

_ARGS = """
Args:
    predictions (list of str): transcripts from the model.
    references (list of str): the reference transcripts.
Returns:
    {name} (float): total edits (substitutions, deletions, insertions) / reference {units}.
"""


class ErrorRate(evaluate.Metric):
    metric_name: ClassVar[str] = ""
    units: ClassVar[str] = ""
    description: ClassVar[str] = ""
    rate_fn: ClassVar[Callable[..., Any]]

    def _info(self):
        return evaluate.MetricInfo(description=self.description, citation="",
                                   inputs_description=_ARGS.format(name=self.metric_name, units=self.units),
                                   features=datasets.Features({"predictions": datasets.Value("string"),
                                                               "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        return {self.metric_name: float(type(self).rate_fn(list(references), list(predictions)))}
