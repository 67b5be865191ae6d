"""Modality adapters: raw inputs -> backbone -> features. Importing this registers the built-ins."""

from mtransfer.adapters.base import ADAPTERS, Adapter, Features, LayerGroup, get_adapter_class, register_adapter
from mtransfer.adapters.sentence import SentenceTransformerAdapter
from mtransfer.adapters.static_vectors import StaticVectorsAdapter
from mtransfer.adapters.text import TextAdapter

__all__ = ["ADAPTERS", "Adapter", "Features", "LayerGroup", "SentenceTransformerAdapter", "StaticVectorsAdapter", "TextAdapter", "get_adapter_class",
           "register_adapter"]
