"""mtransfer: transfer learning across images, text and speech.

The public names load on first use (PEP 562), so ``import mtransfer`` and ``mtransfer --help``
do not import torch, transformers and every adapter up front.

>>> import mtransfer
>>> sorted(mtransfer.STRATEGIES)[:3]
['chain_thaw', 'contrastive', 'frozen']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtransfer.lazy import lazy_attributes

__version__ = "0.1.0"

_PUBLIC = {
    "Adapter": "mtransfer.adapters",
    "TextAdapter": "mtransfer.adapters",
    "ImageAdapter": "mtransfer.adapters",
    "AudioAdapter": "mtransfer.adapters",
    "LabeledDataset": "mtransfer.data",
    "load_labeled": "mtransfer.data",
    "Head": "mtransfer.heads",
    "HeadConfig": "mtransfer.heads",
    "TransferModel": "mtransfer.model",
    "STRATEGIES": "mtransfer.strategies",
    "plan_strategy": "mtransfer.strategies",
    "Trainer": "mtransfer.training",
    "TrainerCallback": "mtransfer.training",
    "TrainingArguments": "mtransfer.training",
    "TrainResult": "mtransfer.training",
}
__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs (names re-exported by __getattr__)
    from mtransfer.adapters import Adapter, AudioAdapter, ImageAdapter, TextAdapter  # noqa: F401
    from mtransfer.data import LabeledDataset, load_labeled  # noqa: F401
    from mtransfer.heads import Head, HeadConfig  # noqa: F401
    from mtransfer.model import TransferModel  # noqa: F401
    from mtransfer.strategies import STRATEGIES, plan_strategy  # noqa: F401
    from mtransfer.training import Trainer, TrainerCallback, TrainingArguments, TrainResult  # noqa: F401


__getattr__ = lazy_attributes("mtransfer", _PUBLIC, globals())


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
