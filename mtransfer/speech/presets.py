"""Small wav2vec2 configurations for from-scratch speech work on a CPU.

The same code path as the Hub's large encoders (``Wav2Vec2Model`` behind the audio adapter),
at a size a few hundred utterances train in minutes on 2 CPU cores. A preset is written once
into the cache as a model folder (config, random weights from a fixed seed, feature extractor)
and then loads like any other: ``builtin:wav2vec2-small`` in every entry point.

=================  ========  ======  =====  =========  =================
preset             hidden    layers  heads  conv dims  parameters
=================  ========  ======  =====  =========  =================
wav2vec2-small     192       4       4      7 x 96     2.2 M
wav2vec2-tiny      96        2       2      7 x 48     0.34 M
=================  ========  ======  =====  =========  =================

Frames are 20 ms (the standard 320-sample stride at 16 kHz).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "wav2vec2-small": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768,
                           conv_dim=(96,) * 7, num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=8),
    "wav2vec2-tiny": dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=2, intermediate_size=384,
                          conv_dim=(48,) * 7, num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=4),
}
COMMON = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, layerdrop=0.0,
              hidden_dropout=0.1, activation_dropout=0.0, attention_dropout=0.1, feat_proj_dropout=0.0,
              final_dropout=0.0, mask_time_prob=0.05, mask_time_length=5, num_codevectors_per_group=64,
              num_codevector_groups=2, codevector_dim=128, proj_codevector_dim=128, num_negatives=20)
VERSION = "1"


def preset_config(name: str) -> Any:
    """The ``Wav2Vec2Config`` of preset ``name``."""
    from transformers import Wav2Vec2Config

    if name not in PRESETS:
        raise ValueError(f"unknown speech preset {name!r}; expected one of {', '.join(PRESETS)}.")
    return Wav2Vec2Config(**COMMON, **PRESETS[name])


def build_preset(name: str, folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write preset ``name`` as a model folder (random init from ``seed``) with its feature extractor."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from mtransfer.atomic import atomic_directory

    folder = Path(folder)
    config = preset_config(name)
    with atomic_directory(folder) as tmp:
        torch.manual_seed(seed)
        Wav2Vec2Model(config).save_pretrained(tmp)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                 return_attention_mask=True).save_pretrained(tmp)
    return folder


def preset_path(name: str) -> str:
    """The cached folder of preset ``name``, built on first use."""
    from mtransfer.cache import default_cache_dir

    folder = default_cache_dir().parent / "presets" / f"{name}-v{VERSION}"
    if not (folder / "config.json").is_file():
        build_preset(name, folder)
    return str(folder)
