"""mtransfer: transfer learning across images, text and speech.

>>> import mtransfer
>>> sorted(mtransfer.STRATEGIES)[:3]
['chain_thaw', 'frozen', 'full']
"""

from mtransfer.adapters import Adapter, TextAdapter
from mtransfer.data import LabeledDataset, load_labeled
from mtransfer.heads import Head, HeadConfig
from mtransfer.model import TransferModel
from mtransfer.strategies import STRATEGIES, plan_strategy
from mtransfer.training import Trainer, TrainerCallback, TrainingArguments, TrainResult

__version__ = "0.1.0"
__all__ = [
    "Adapter",
    "Head",
    "HeadConfig",
    "LabeledDataset",
    "STRATEGIES",
    "TextAdapter",
    "TrainResult",
    "Trainer",
    "TrainerCallback",
    "TrainingArguments",
    "TransferModel",
    "load_labeled",
    "plan_strategy",
]
