"""Modality adapters: raw inputs -> backbone -> features.

The list of modalities (:func:`list_modalities`) is the one list the CLI, configs, export and
ranking read. Each built-in adapter's module is imported when its modality is first used
(:func:`get_adapter_class`) or its class is named here (``mtransfer.adapters.ImageAdapter``), so
loading a text model never imports the image or audio stack.
"""

from typing import TYPE_CHECKING

from mtransfer.adapters.base import (ADAPTERS, Adapter, Features, LayerGroup, NativeForm, get_adapter_class,
                                     list_modalities, register_adapter)
from mtransfer.lazy import lazy_attributes

_CLASSES = {"TextAdapter": "mtransfer.adapters.text", "SentenceTransformerAdapter": "mtransfer.adapters.sentence",
            "StaticVectorsAdapter": "mtransfer.adapters.static_vectors", "ImageAdapter": "mtransfer.adapters.image",
            "TorchBackboneAdapter": "mtransfer.adapters.torch_backbone", "AudioAdapter": "mtransfer.adapters.audio"}

if TYPE_CHECKING:  # pragma: no cover
    from mtransfer.adapters.audio import AudioAdapter  # noqa: F401
    from mtransfer.adapters.image import ImageAdapter  # noqa: F401
    from mtransfer.adapters.sentence import SentenceTransformerAdapter  # noqa: F401
    from mtransfer.adapters.static_vectors import StaticVectorsAdapter  # noqa: F401
    from mtransfer.adapters.text import TextAdapter  # noqa: F401
    from mtransfer.adapters.torch_backbone import TorchBackboneAdapter  # noqa: F401


__getattr__ = lazy_attributes("mtransfer.adapters", _CLASSES, globals())

__all__ = ["ADAPTERS", "Adapter", "AudioAdapter", "Features", "ImageAdapter", "LayerGroup", "NativeForm",
           "SentenceTransformerAdapter", "StaticVectorsAdapter", "TextAdapter", "TorchBackboneAdapter", "get_adapter_class",
           "list_modalities", "register_adapter"]
