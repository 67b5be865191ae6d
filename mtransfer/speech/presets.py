"""Small speech encoders for from-scratch work on a CPU.

The same code path as the Hub's large encoders (``Wav2Vec2Model`` or ``Wav2Vec2BertModel``
behind the audio adapter), at a size a few hundred utterances train in minutes on 2 CPU cores.
A preset is written once into the cache as a model folder (config, random weights from a fixed
seed, feature extractor) and then loads like any other: ``builtin:w2v-bert-small`` in every
entry point.

=================  ===============  ======  ======  =====  ==========  ===========================
preset             family           hidden  layers  heads  parameters  input
=================  ===============  ======  ======  =====  ==========  ===========================
w2v-bert-small     w2v-BERT 2.0     144     4       4      2.0 M       80 log-mel bins, 2 stacked
w2v-bert-mini      w2v-BERT 2.0     96      3       4      0.68 M      80 log-mel bins, 4 stacked
wav2vec2-small     wav2vec2         192     4       4      2.2 M       waveform, 7 convs of 96
wav2vec2-tiny      wav2vec2         96      2       2      0.34 M      waveform, 7 convs of 48
=================  ===============  ======  ======  =====  ==========  ===========================

Frames are 20 ms, except ``w2v-bert-mini``'s 40 ms (four 10 ms filterbank frames stacked; espeak-ng
speech has at most 0.8 characters per 40 ms frame, so CTC still fits): half the frames and a third of
the width make it about 5x faster to train than ``w2v-bert-small`` on a CPU thread (19 against 92 ms
per 3 s utterance), the size the transfer matrix's ~100 runs need. From random initialisation on a few hundred utterances the
filterbank model learns far sooner than the raw-waveform ones, whose convolutional front end
has to learn a filterbank first (see the README's speech demonstration); the wav2vec2 presets
are the ones continued pretraining (``Wav2Vec2ForPreTraining``) trains.
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
# a conformer (feed-forward, self-attention, depthwise convolution, feed-forward) over stacked log-mel frames;
# the convolution gives positions, so no position embedding
W2V_BERT_COMMON = dict(conv_depthwise_kernel_size=15, position_embeddings_type=None, hidden_dropout=0.1,
                       attention_dropout=0.1, activation_dropout=0.0, feat_proj_dropout=0.1, final_dropout=0.0,
                       layerdrop=0.0, mask_time_prob=0.05, mask_time_length=5, mask_feature_prob=0.0, add_adapter=False,
                       use_intermediate_ffn_before_adapter=False)
W2V_BERT: dict[str, dict[str, Any]] = {  # feature_projection_input_dim: 80 log-mel bins x frames stacked
    "w2v-bert-small": dict(W2V_BERT_COMMON, hidden_size=144, num_hidden_layers=4, num_attention_heads=4,
                           intermediate_size=576, feature_projection_input_dim=160),
    "w2v-bert-mini": dict(W2V_BERT_COMMON, hidden_size=96, num_hidden_layers=3, num_attention_heads=4,
                          intermediate_size=384, feature_projection_input_dim=320),
}
COMMON = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, layerdrop=0.0,
              hidden_dropout=0.1, activation_dropout=0.0, attention_dropout=0.1, feat_proj_dropout=0.0,
              final_dropout=0.0, mask_time_prob=0.05, mask_time_length=5, num_codevectors_per_group=64,
              num_codevector_groups=2, codevector_dim=128, proj_codevector_dim=128, num_negatives=20)
VERSION = "1"


def preset_config(name: str) -> Any:
    """The ``Wav2Vec2Config`` of preset ``name``."""
    from transformers import Wav2Vec2Config

    if name in W2V_BERT:
        from transformers import Wav2Vec2BertConfig

        return Wav2Vec2BertConfig(**W2V_BERT[name])
    if name not in PRESETS:
        raise ValueError(f"unknown speech preset {name!r}; expected one of {', '.join([*W2V_BERT, *PRESETS])}.")
    return Wav2Vec2Config(**COMMON, **PRESETS[name])


def build_preset(name: str, folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write preset ``name`` as a model folder (random init from ``seed``) with its feature extractor."""
    import torch
    from transformers import AutoModel, SeamlessM4TFeatureExtractor, Wav2Vec2FeatureExtractor

    from mtransfer.atomic import atomic_directory

    folder = Path(folder)
    config = preset_config(name)
    # the caller's random state is left as it was: a preset built on first use inside a seeded
    # from_backbone must not change the head that seed draws
    with atomic_directory(folder) as tmp, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        AutoModel.from_config(config).save_pretrained(tmp)
        if name in W2V_BERT:  # w2v-BERT 2.0's own front end: 80 log-mel bins every 10 ms, 2 (or 4) frames stacked
            stride = W2V_BERT[name]["feature_projection_input_dim"] // 80
            SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=16000, stride=stride,
                                        padding_value=1.0).save_pretrained(tmp)
        else:
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
