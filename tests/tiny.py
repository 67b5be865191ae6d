"""Builders for tiny random models and synthetic data used by the tests (and subprocess scripts)."""

from __future__ import annotations

import random
from pathlib import Path

TOPICS = {
    "food": "bread cheese soup apple pasta rice salad cake butter tea".split(),
    "science": "atom energy physics cell gene planet orbit theory data lab".split(),
    "sport": "goal match team ball coach race score player league win".split(),
}
FILLER = "the a of and to in is it that on with this was for".split()


def build_tiny_bert(folder: Path, num_layers: int = 2, dropout: float = 0.1) -> Path:
    """Write a tiny random BERT and a word-level WordPiece tokenizer to ``folder`` (``dropout``: hidden and attention)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    words = sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    torch.manual_seed(0)
    model = BertModel(config)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def topic_examples(rng: random.Random, per_topic: int) -> list[dict]:
    """Sentences mixing filler words with 2-4 words of one topic."""
    rows = []
    for topic, words in TOPICS.items():
        for _ in range(per_topic):
            tokens = rng.sample(FILLER, 4) + rng.sample(words, rng.randint(2, 4))
            rng.shuffle(tokens)
            rows.append({"text": " ".join(tokens), "label": topic})
    rng.shuffle(rows)
    return rows


def extraction_texts(n: int = 50) -> list[str]:
    """Deterministic texts of varied length, for feature-extraction tests."""
    rng = random.Random(7)
    words = [w for ws in TOPICS.values() for w in ws] + FILLER
    return [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(n)]


def build_tiny_sentence_transformer(bert_folder: Path, folder: Path) -> Path:
    """A sentence-transformers model around the tiny BERT: mean pooling, a dense layer, normalisation."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(0)
    transformer = models.Transformer(str(bert_folder), max_seq_length=32)
    modules = [transformer, models.Pooling(32, "mean"), models.Dense(32, 16), models.Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return Path(folder)


# --- vision ---------------------------------------------------------------------------------
VISION_ARCHS = ("vit", "convnext", "resnet", "timm")


def build_tiny_vision(kind: str, folder: Path, image_size: int = 32) -> Path:
    """Write a tiny random vision backbone with its image processor to ``folder``.

    ``kind``: ``vit``, ``convnext``, ``resnet``, ``swin``, ``dinov2`` or ``timm`` (timm's
    ``test_vit`` through transformers' TimmWrapper).
    """
    import torch
    from transformers import (AutoModel, ConvNextConfig, ConvNextImageProcessor, Dinov2Config, ResNetConfig,
                              SwinConfig, TimmWrapperConfig, TimmWrapperImageProcessor, ViTConfig, ViTImageProcessor)

    folder = Path(folder)
    torch.manual_seed(0)
    size = {"height": image_size, "width": image_size}
    if kind == "vit":
        config = ViTConfig(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=37)
        processor = ViTImageProcessor(size=size)
    elif kind == "dinov2":
        config = Dinov2Config(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              mlp_ratio=2)
        processor = ViTImageProcessor(size=size)
    elif kind == "convnext":
        config = ConvNextConfig(num_channels=3, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1], patch_size=4)
        processor = ConvNextImageProcessor(size={"shortest_edge": image_size}, crop_pct=0.875)
    elif kind == "resnet":
        config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="basic")
        processor = ViTImageProcessor(size=size, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    elif kind == "swin":
        config = SwinConfig(image_size=image_size, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4)
        processor = ViTImageProcessor(size=size)
    elif kind == "timm":
        config = TimmWrapperConfig(architecture="test_vit")
        pretrained_cfg = {"input_size": [3, image_size, image_size], "interpolation": "bicubic", "crop_pct": 0.875,
                          "crop_mode": "center", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": 0}
        config.pretrained_cfg = pretrained_cfg
        processor = TimmWrapperImageProcessor(pretrained_cfg=pretrained_cfg, architecture="test_vit")
    else:
        raise ValueError(f"unknown tiny vision kind {kind!r}")
    model = AutoModel.from_config(config)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def shape_images(n_per_class: int, size: int = 40, seed: int = 0) -> list[dict]:
    """Synthetic RGB images of three classes (a bright square, a horizontal bar, a vertical bar) with noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for label in ("square", "hbar", "vbar"):
        for _ in range(n_per_class):
            img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            a, b = rng.integers(4, size // 2, 2)
            if label == "square":
                img[a:a + size // 3, b:b + size // 3] = 230
            elif label == "hbar":
                img[a:a + 5, 2:size - 2] = 230
            else:
                img[2:size - 2, b:b + 5] = 230
            rows.append({"image": img, "label": label})
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


# --- audio ----------------------------------------------------------------------------------
def build_tiny_speech(kind: str, folder: Path) -> Path:
    """Write a tiny random speech encoder (``wav2vec2``, ``hubert``, ``wavlm`` or ``w2v-bert``) and its feature extractor.

    Real strides (320 samples per frame at 16 kHz; w2v-BERT: 80 log-mel bins every 10 ms, two frames
    stacked), narrow convolutions, 2 transformer layers of width 32.
    """
    import torch
    from transformers import (AutoModel, HubertConfig, SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2Config,
                              Wav2Vec2FeatureExtractor, WavLMConfig)

    if kind == "w2v-bert":
        torch.manual_seed(0)
        config = Wav2Vec2BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                    feature_projection_input_dim=160, conv_depthwise_kernel_size=5,
                                    position_embeddings_type="relative_key", left_max_position_embeddings=16,
                                    right_max_position_embeddings=4, mask_time_prob=0.05, layerdrop=0.0,
                                    hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0,
                                    feat_proj_dropout=0.0, add_adapter=False)
        AutoModel.from_config(config).save_pretrained(folder)
        SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=16000, stride=2,
                                    padding_value=1.0).save_pretrained(folder)
        return Path(folder)

    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                  conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                  feat_extract_norm="layer", do_stable_layer_norm=True, mask_time_prob=0.05, layerdrop=0.0,
                  hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0)
    configs = {"wav2vec2": Wav2Vec2Config, "hubert": HubertConfig, "wavlm": WavLMConfig}
    if kind not in configs:
        raise ValueError(f"unknown tiny speech kind {kind!r}")
    extra = {"num_buckets": 16, "max_bucket_distance": 64} if kind == "wavlm" else {}
    torch.manual_seed(0)
    model = AutoModel.from_config(configs[kind](**common, **extra))
    folder = Path(folder)
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    return folder


def tone(seconds: float, rate: int, freqs=(220.0, 660.0, 1500.0), channels: int = 1):
    """A band-limited test signal (sum of sines below 4 kHz). Shape: ``(channels, samples)``."""
    import math

    import torch

    t = torch.arange(int(round(seconds * rate))) / rate
    wav = sum(torch.sin(2 * math.pi * f * t + k) for k, f in enumerate(freqs)) / len(freqs)
    return (0.5 * wav).repeat(channels, 1)


def make_small_cnn(width: int = 8):
    """A plain torch image backbone (what a user writes): stem, a stack of blocks, a norm; returns feature maps."""
    from torch import nn

    class SmallCNN(nn.Module):
        def __init__(self, width: int = 8) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1)
            self.blocks = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, padding=1),
                                        nn.ReLU(), nn.Conv2d(2 * width, 2 * width, 3, padding=1))
            self.norm = nn.BatchNorm2d(2 * width)

        def forward(self, x):
            return self.norm(self.blocks(self.stem(x)))

    return SmallCNN(width)
