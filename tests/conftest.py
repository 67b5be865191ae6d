"""Shared fixtures: tiny random models built once per session, saved and loaded back from disk."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import random
import tempfile
from pathlib import Path

# every test process gets its own feature cache (never the user's ~/.cache)
os.environ.setdefault("MTRANSFER_CACHE", tempfile.mkdtemp(prefix="mtransfer-test-cache-"))

import pytest
import torch

from tests.tiny import TOPICS, build_tiny_bert, topic_examples


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """Folder of a tiny random BERT (2 layers, hidden 32) and its WordPiece tokenizer."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def topic_data():
    """A small synthetic 3-topic text task the tiny BERT can learn: (train rows, eval rows)."""
    rng = random.Random(0)
    return topic_examples(rng, 48), topic_examples(rng, 21)


@pytest.fixture()
def text_backbone_calls(monkeypatch):
    """Backbone passes of every TextAdapter, counted (``["n"]``); backbones kept loaded by
    ``mtransfer.sklearn`` are forgotten before and after, so the count starts from a fresh load."""
    from mtransfer.adapters import TextAdapter
    from mtransfer.sklearn import clear_loaded_backbones

    count = {"n": 0}
    original = TextAdapter.forward_features

    def counting(self, batch):
        count["n"] += 1
        return original(self, batch)

    monkeypatch.setattr(TextAdapter, "forward_features", counting)
    clear_loaded_backbones()
    yield count
    clear_loaded_backbones()


@pytest.fixture()
def labels():
    return list(TOPICS)


@pytest.fixture(scope="session")
def tiny_sentence(tiny_bert, tmp_path_factory) -> Path:
    """Folder of a tiny sentence-transformers model (the tiny BERT, mean pooling, Dense 32->16, Normalize)."""
    from tests.tiny import build_tiny_sentence_transformer

    return build_tiny_sentence_transformer(tiny_bert, tmp_path_factory.mktemp("tiny-sentence"))


@pytest.fixture(scope="session")
def tiny_vision(tmp_path_factory):
    """``kind -> folder`` of a tiny random vision backbone (vit, convnext, resnet, swin, dinov2, timm), built once."""
    from tests.tiny import build_tiny_vision

    built: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in built:
            built[kind] = build_tiny_vision(kind, tmp_path_factory.mktemp(f"tiny-{kind}"))
        return built[kind]

    return get


@pytest.fixture(scope="session")
def tiny_speech(tmp_path_factory):
    """``kind -> folder`` of a tiny random speech encoder (wav2vec2, hubert, wavlm), built once."""
    from tests.tiny import build_tiny_speech

    built: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in built:
            built[kind] = build_tiny_speech(kind, tmp_path_factory.mktemp(f"tiny-{kind}"))
        return built[kind]

    return get


@pytest.fixture(scope="session")
def shape_data():
    """Synthetic 3-class image task (square / horizontal bar / vertical bar): (train rows, eval rows)."""
    from tests.tiny import shape_images

    return shape_images(12, seed=0), shape_images(6, seed=1)
