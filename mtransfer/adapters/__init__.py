"""Modality adapters: raw inputs -> backbone -> features. Importing this registers the built-ins."""

from mtransfer.adapters.audio import AudioAdapter
from mtransfer.adapters.base import ADAPTERS, Adapter, Features, LayerGroup, get_adapter_class, register_adapter
from mtransfer.adapters.image import ImageAdapter
from mtransfer.adapters.sentence import SentenceTransformerAdapter
from mtransfer.adapters.static_vectors import StaticVectorsAdapter
from mtransfer.adapters.text import TextAdapter
from mtransfer.adapters.torch_backbone import TorchBackboneAdapter

__all__ = ["ADAPTERS", "Adapter", "AudioAdapter", "Features", "ImageAdapter", "LayerGroup", "SentenceTransformerAdapter", "StaticVectorsAdapter", "TextAdapter", "TorchBackboneAdapter", "get_adapter_class",
           "register_adapter"]
