"""Modality adapters: raw inputs -> backbone -> features. Importing this registers the built-ins.

The registry (:func:`list_modalities`) is the one list of modalities: the CLI, configs, export
and ranking read it. Registration order is the order shown to users.
"""

from mtransfer.adapters.base import (ADAPTERS, Adapter, Features, LayerGroup, NativeForm, get_adapter_class,
                                     list_modalities, register_adapter)
from mtransfer.adapters.text import TextAdapter  # isort: skip  (registration order)
from mtransfer.adapters.sentence import SentenceTransformerAdapter  # isort: skip
from mtransfer.adapters.static_vectors import StaticVectorsAdapter  # isort: skip
from mtransfer.adapters.image import ImageAdapter  # isort: skip
from mtransfer.adapters.torch_backbone import TorchBackboneAdapter  # isort: skip
from mtransfer.adapters.audio import AudioAdapter  # isort: skip

__all__ = ["ADAPTERS", "Adapter", "AudioAdapter", "Features", "ImageAdapter", "LayerGroup", "NativeForm",
           "SentenceTransformerAdapter", "StaticVectorsAdapter", "TextAdapter", "TorchBackboneAdapter", "get_adapter_class",
           "list_modalities", "register_adapter"]
