"""Audio adapter for transformers speech encoders: wav2vec2, HuBERT, WavLM, Data2VecAudio, ...

Any input (file, array with its rate, ``datasets`` audio value) becomes mono at the model's
sampling rate through torchaudio (:mod:`mtransfer.media`), then goes through the model's own
feature extractor one clip at a time (so per-utterance normalisation never sees padding),
and is zero-padded into a batch with an attention mask.

Features: frame features ``(batch, frames, dim)`` with their mask (what CTC heads read) and a
pooled embedding over the valid frames only (``mean``, or ``stats``: mean and standard
deviation concatenated). Optionally a learned softmax-weighted sum of all hidden layers
(the SUPERB protocol) replaces the last layer.

Front-end memo: the feature extractor's output for a whole clip read from a file is kept in memory
(keyed by the file's path, size and modification time and the extractor's settings; shared by every
adapter in the process, least recently used first out past ``FRONT_END_MEMO_BYTES``). A filterbank or
a normalised waveform is the same every epoch, so only the first epoch reads and transforms a file:
this halves a small encoder's epoch on a CPU. The same outputs go to disk too
(:class:`mtransfer.cache.FrontEndStore`, keyed by the file's content and the extractor's settings), so other
processes, later runs and reruns read them instead of decoding and transforming the file; an entry holds the
clip's sample count, and a clip longer than an adapter's ``max_duration`` is still cropped or chunked by it.
Cropped or chunked clips are not memoised. Likewise a
file's sample count is kept once it has decoded (``SAMPLE_COUNTS``), so the checks before each run
(every input readable, every CTC transcript within its frames) decode a file once per process.

Long clips: training takes a random ``max_duration`` crop; evaluation uses the full clip, or,
with ``eval_chunking``, ``max_duration`` chunks whose pooled features are averaged (weighted by
their frame counts).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

from mtransfer.modalities import BUILTIN_MODALITIES
from mtransfer.adapters.base import Adapter, Features, LayerGroup, NativeForm, load_pretrained, register_adapter
from mtransfer.cache import FRONT_END_STORE
from mtransfer.media import AUDIO_SUFFIXES, find_bad_inputs, load_audio, media_fingerprint

logger = logging.getLogger(__name__)
ATTENTION_WARN_BYTES = 2**30  # warn when one attention layer of an evaluation batch needs more
POOLINGS = ("mean", "stats")
MIN_TRAIN_SECONDS = 0.5  # training batches are padded at least this long (SpecAugment needs >= mask_time_length frames)
FRONT_END_MEMO_BYTES = 1 << 30  # front-end outputs kept in memory per process (0 turns the memo off)


class FrontEndMemo:
    """Feature-extractor outputs of whole clips read from files, least recently used out past a byte budget."""

    def __init__(self) -> None:
        from collections import OrderedDict

        self.items: OrderedDict[tuple, tuple[torch.Tensor, int, int]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    @staticmethod
    def key(item: Any, extractor: str) -> tuple | None:
        """The memo key of a file input (None for arrays and other inputs, which are never memoised)."""
        if not isinstance(item, (str, os.PathLike)):
            return None
        try:
            st = os.stat(item)
        except OSError:
            return None
        return (os.path.abspath(item), st.st_size, st.st_mtime_ns, extractor)

    def get(self, key: tuple | None) -> tuple[torch.Tensor, int, int] | None:
        """``(values, valid frames, samples of the clip)``, or None."""
        if key is None or key not in self.items:
            self.misses += key is not None
            return None
        self.hits += 1
        self.items.move_to_end(key)
        return self.items[key]

    def put(self, key: tuple | None, values: torch.Tensor, valid: int, samples: int) -> None:
        size = values.numel() * values.element_size()
        if key is None or size > FRONT_END_MEMO_BYTES:
            return
        self.items[key] = (values, valid, samples)
        self.bytes += size
        while self.bytes > FRONT_END_MEMO_BYTES and self.items:
            old = self.items.popitem(last=False)[1][0]
            self.bytes -= old.numel() * old.element_size()


FRONT_END_MEMO = FrontEndMemo()
# (path, size, mtime, rate) -> samples of a file that decoded without error: the checks before training (every
# input readable, every transcript within its audio's frames) then decode a file once per process, not once per run
SAMPLE_COUNTS: dict[tuple, int] = {}


class LayerWeighting(nn.Module):
    """A softmax-weighted sum of hidden layers; starts as their plain average.

    Shape:
        hidden_states: ``num_layers`` tensors ``(batch, frames, dim)`` -> ``(batch, frames, dim)``.
    """

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))

    def forward(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(hidden_states) != self.weights.numel():
            raise ValueError(f"LayerWeighting has {self.weights.numel()} weights for {len(hidden_states)} hidden layers.")
        w = torch.softmax(self.weights, 0).to(hidden_states[0].dtype)
        return torch.einsum("l,lbtd->btd", w, torch.stack(list(hidden_states)))


@register_adapter("audio")
class AudioAdapter(Adapter):
    """A transformers speech encoder with its feature extractor, by Hub id or local folder.

    Layer groups, input side first: ``feature_encoder`` (the CNN on raw audio; left out and
    frozen when ``freeze_feature_encoder``, as every wav2vec2 recipe does),
    ``feature_projection`` (projection, positional convolution and what else precedes the
    first transformer layer), ``layer.0`` ... ``layer.{n-1}``, and ``top`` (a final layer norm)
    when the model has one after the layers.

    Args:
        model_name_or_path: Hub id or folder of a transformers audio encoder.
        pooling: ``mean`` over valid frames, or ``stats`` (mean and std, twice the width).
        max_duration: Seconds per clip in training (random crop) and per chunk with ``eval_chunking``.
        eval_chunking: Evaluate long clips in ``max_duration`` chunks and average them; default:
            the full clip in one pass.
        layer_weighting: Use a learned weighted sum of all hidden layers (trained with the head).
        freeze_feature_encoder: Keep the CNN feature encoder frozen in every strategy.
        layerdrop: The model's LayerDrop probability in training (0 keeps every layer, which
            multi-GPU training needs unless unused parameters are tracked).
        pretrained: False builds the same architecture with random weights (a baseline).
        revision: Hub revision when loading by id.

    >>> adapter = AudioAdapter("facebook/wav2vec2-base")  # doctest: +SKIP
    >>> adapter.forward_features(adapter.preprocess(["clip.wav"])).tokens.shape  # doctest: +SKIP
    torch.Size([1, 149, 768])
    """

    pipeline_tag = "audio-classification"
    media_suffixes = AUDIO_SUFFIXES
    default_input_column = BUILTIN_MODALITIES["audio"][1]
    summary = BUILTIN_MODALITIES["audio"][0]

    def __init__(self, model_name_or_path: str | os.PathLike, *, pooling: str = "mean", max_duration: float = 10.0,
                 eval_chunking: bool = False, layer_weighting: bool = False, freeze_feature_encoder: bool = True,
                 layerdrop: float = 0.0, pretrained: bool = True, revision: str | None = None) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"AudioAdapter pooling={pooling!r}; expected one of {', '.join(POOLINGS)}.")
        if not max_duration or max_duration <= 0:
            raise ValueError(f"AudioAdapter max_duration={max_duration!r}: expected seconds > 0.")
        if not 0 <= layerdrop < 1:
            raise ValueError(f"AudioAdapter layerdrop={layerdrop!r}: expected a probability in [0, 1).")
        self.model_name_or_path = str(model_name_or_path)
        self.pooling = pooling
        self.max_duration = float(max_duration)
        self.eval_chunking = bool(eval_chunking)
        self.freeze_feature_encoder = bool(freeze_feature_encoder)
        self.layerdrop = float(layerdrop)
        kwargs = {"revision": revision} if revision else {}
        self.feature_extractor = load_pretrained(AutoFeatureExtractor.from_pretrained, model_name_or_path,
                                                 "audio feature extractor", **kwargs)
        config = load_pretrained(AutoConfig.from_pretrained, model_name_or_path, "model config", **kwargs)
        if hasattr(config, "layerdrop"):
            config.layerdrop = self.layerdrop
        if pretrained:
            self.backbone = load_pretrained(AutoModel.from_pretrained, model_name_or_path, "audio model", config=config, **kwargs)
        else:
            self.backbone = AutoModel.from_config(config)
        # raw-waveform encoders read ``input_values``; w2v-BERT reads filterbank frames (``input_features``)
        self.input_name = str(getattr(self.backbone, "main_input_name", "input_values"))
        if (not hasattr(self.backbone, "_get_feat_extract_output_lengths")
                or self.input_name not in ("input_values", "input_features")):
            raise ValueError(f"{self.model_name_or_path!r} ({type(self.backbone).__name__}) is not a speech encoder of "
                             "the wav2vec2 family (wav2vec2, HuBERT, WavLM, Data2VecAudio, UniSpeech, SEW, w2v-BERT...).")
        self.sampling_rate = int(self.feature_extractor.sampling_rate)
        self.pass_attention_mask = bool(getattr(self.feature_extractor, "return_attention_mask", True))
        self.layer_weights = LayerWeighting(config.num_hidden_layers + 1) if layer_weighting else None
        self._frames_of: dict[int, int] = {}  # filterbank frames per clip length (the extractor, run once per length)
        self._frames_rule = self._arithmetic_frames_rule() if self.input_name == "input_features" else None
        for p in self.unused_parameters():
            p.requires_grad_(False)
        hidden = int(config.hidden_size)
        self.embedding_dim = 2 * hidden if pooling == "stats" else hidden
        self.min_samples = self._min_samples()
        self._warned_widths: set[int] = set()
        # what the front end does to a clip: the extractor's settings and the padding of short clips
        self._extractor_id = (f"{type(self.feature_extractor).__name__}:{self.min_samples}:"
                              f"{self.feature_extractor.to_json_string()}")

    def _feature_frames(self, samples: int) -> int:
        """Filterbank frames the feature extractor makes of ``samples`` (encoders that read ``input_features``)."""
        if samples <= 0:
            return 0
        if samples not in self._frames_of:
            self._frames_of[samples] = (self._count_feature_frames(samples) if self._frames_rule is None
                                        else self._frames_rule(samples))
        return self._frames_of[samples]

    def _arithmetic_frames_rule(self) -> Any:
        """w2v-BERT's extractor in closed form (Kaldi frames of 25 ms every 10 ms without centring, padded to an
        even count, then ``stride`` stacked), when it agrees with the extractor on a few lengths; else None."""
        from transformers import SeamlessM4TFeatureExtractor

        fe = self.feature_extractor
        if type(fe) is not SeamlessM4TFeatureExtractor or fe.sampling_rate != 16000:
            return None
        stride = int(fe.stride)

        def rule(samples: int) -> int:
            frames = 1 + (samples - 400) // 160 if samples >= 400 else 0
            return (-(-frames // 2) * 2) // stride

        probes = (401, 719, 1283, 16000, 16161)
        return rule if all(rule(n) == self._count_feature_frames(n) for n in probes) else None

    def _count_feature_frames(self, samples: int) -> int:
        try:
            wave = (0.1 * np.sin(np.arange(samples, dtype=np.float32) * 0.01)).astype(np.float32)
            with np.errstate(all="ignore"), warnings.catch_warnings():  # a one-frame variance is 0/0
                warnings.simplefilter("ignore", RuntimeWarning)
                out = self.feature_extractor(wave, sampling_rate=self.sampling_rate, return_tensors="np",
                                             return_attention_mask=True)
        except (ValueError, IndexError, RuntimeError):  # shorter than one analysis window
            return 0
        return int(out[self.input_name].shape[1])

    def output_frames(self, samples: int | torch.Tensor) -> torch.Tensor:
        """Encoder output frames for clips of ``samples`` samples."""
        samples = torch.as_tensor(samples)
        if self.input_name == "input_features":
            samples = torch.tensor([self._feature_frames(int(n)) for n in samples.reshape(-1)]).reshape(samples.shape)
        return self.backbone._get_feat_extract_output_lengths(samples)

    def _min_samples(self) -> int:
        """The shortest input that yields one frame (two for a filterbank, whose per-bin normalisation needs a variance)."""
        need = 2 if self.input_name == "input_features" else 1
        n = 1
        while int(self.output_frames(n)) < need:
            n *= 2
        lo, hi = n // 2, n
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if int(self.output_frames(mid)) >= need else (mid, hi)
        return hi

    # --- inputs -------------------------------------------------------------------------
    def load(self, item: Any) -> torch.Tensor:
        """One input as a mono waveform at the model's rate. Shape: ``(samples,)``."""
        return load_audio(item, self.sampling_rate)

    def num_samples(self, item: Any) -> int:
        """Samples of one input at the model's rate (a file's count is kept once it has decoded)."""
        key = FrontEndMemo.key(item, f"rate={self.sampling_rate}")
        if key is not None and key in SAMPLE_COUNTS:
            return SAMPLE_COUNTS[key]
        stored = FRONT_END_STORE.get(FRONT_END_STORE.entry(item, self._extractor_id)) if key is not None else None
        if stored is not None and FRONT_END_MEMO_BYTES:  # read once: the first epoch takes it from the memo
            FRONT_END_MEMO.put(FrontEndMemo.key(item, self._extractor_id), *stored)
        samples = stored[2] if stored is not None else int(self.load(item).numel())
        if key is not None:
            SAMPLE_COUNTS[key] = samples
        return samples

    def find_bad_inputs(self, inputs: Sequence[Any]) -> list[tuple[int, str]]:
        return find_bad_inputs(inputs, self.num_samples)

    def input_lengths(self, inputs: Sequence[Any]) -> list[int]:
        """Samples per input at the model's rate, as training pads them (a clip longer than ``max_duration`` is
        cropped to it unless ``whole_inputs``)."""
        cap = None if self.whole_inputs else int(round(self.max_duration * self.sampling_rate))
        return [min(self.num_samples(x), cap) if cap else self.num_samples(x) for x in inputs]

    def input_fingerprint(self, inputs: Sequence[Any]) -> str:
        return media_fingerprint(inputs)

    def preprocess(self, inputs: Sequence[Any], *, training: bool = False) -> dict[str, torch.Tensor]:
        max_samples = int(round(self.max_duration * self.sampling_rate))
        clips: list[torch.Tensor | tuple[torch.Tensor, int]] = []
        owners: list[int] = []
        keys: list[tuple | None] = []
        for i, item in enumerate(inputs):
            key = FrontEndMemo.key(item, self._extractor_id)  # None: not a file (arrays are never kept)
            hit = FRONT_END_MEMO.get(key) if FRONT_END_MEMO_BYTES else None
            entry = FRONT_END_STORE.entry(item, self._extractor_id) if key is not None and hit is None else None
            if entry is not None and (hit := FRONT_END_STORE.get(entry)) is not None and FRONT_END_MEMO_BYTES:
                FRONT_END_MEMO.put(key, *hit)
            if hit is not None and hit[2] <= max_samples:  # a whole clip (a longer one is cropped or chunked below)
                clips.append(hit[:2])
                owners.append(i)
                keys.append(None)
                continue
            wav = self.load(item)
            if training and not self.whole_inputs and wav.numel() > max_samples:
                start = int(torch.randint(0, wav.numel() - max_samples + 1, (1,)))
                wav = wav[start:start + max_samples]
            if not training and self.eval_chunking and wav.numel() > max_samples:
                pieces = list(wav.split(max_samples))
                if len(pieces) > 1 and pieces[-1].numel() < self.sampling_rate // 2:  # fold a short tail into the last chunk
                    tail = pieces.pop()
                    pieces[-1] = torch.cat([pieces[-1], tail])
                clips += pieces
                owners += [i] * len(pieces)
                keys += [None] * len(pieces)
            else:
                clips.append(wav)
                owners.append(i)
                keys.append((key, entry) if wav.numel() <= max_samples else None)
        values, valid, samples = [], [], []
        features = self.input_name == "input_features"
        for wav, key in zip(clips, keys):
            if isinstance(wav, tuple):  # memoised front-end output
                values.append(wav[0])
                valid.append(wav[1])
                continue
            samples.append(int(wav.numel()))
            if wav.numel() < self.min_samples:
                wav = torch.nn.functional.pad(wav, (0, self.min_samples - wav.numel()))
            out = self.feature_extractor(wav.numpy(), sampling_rate=self.sampling_rate, return_tensors="pt",
                                         return_attention_mask=features)
            values.append(out[self.input_name][0])  # (samples,) or (frames, feature dim)
            # a filterbank's last stacked frame may be half padding: the encoder's attention mask leaves it out (as
            # the extractor says), yet it has an output frame, which the ASR pipeline decodes, and so do we
            valid.append(int(out["attention_mask"][0].sum()) if features else values[-1].shape[0])
            if key is not None:
                if FRONT_END_MEMO_BYTES:
                    FRONT_END_MEMO.put(key[0], values[-1], valid[-1], samples[-1])
                FRONT_END_STORE.put(key[1], values[-1], valid[-1], samples[-1], self._extractor_id)
        # lengths: samples of a waveform, frames of a filterbank; the encoder's output lengths follow from either
        lengths = torch.tensor([v.shape[0] for v in values])
        width = max(v.shape[0] for v in values)
        if training:
            min_width = int(MIN_TRAIN_SECONDS * self.sampling_rate)
            width = max(width, min_width if self.input_name == "input_values" else self._feature_frames(min_width))
        pad = float(getattr(self.feature_extractor, "padding_value", 0.0))
        batch_values = torch.full((len(values), width, *values[0].shape[1:]), pad, dtype=torch.float32)
        mask = torch.zeros(len(values), width, dtype=torch.long)
        for j, v in enumerate(values):
            batch_values[j, :v.shape[0]] = v
            mask[j, :valid[j]] = 1
        batch = {self.input_name: batch_values, "attention_mask": mask, "lengths": lengths}
        if not training and samples:
            self._warn_attention_memory(len(values), max(samples))
        if len(clips) != len(inputs):
            batch["chunk_owner"] = torch.tensor(owners)
        return batch

    def attention_bytes(self, batch_size: int, samples: int) -> int:
        """Bytes of one layer's float32 self-attention scores for a padded batch of ``samples`` per clip."""
        frames = int(self.output_frames(samples))
        heads = int(getattr(self.backbone.config, "num_attention_heads", 1))
        return 4 * batch_size * heads * frames * frames

    def _warn_attention_memory(self, batch_size: int, samples: int) -> None:
        """Warn (once per size) when an evaluation batch's attention needs over 1 GiB: long clips, no chunking."""
        need = self.attention_bytes(batch_size, samples)
        if need < ATTENTION_WARN_BYTES or samples in self._warned_widths:
            return
        self._warned_widths.add(samples)
        logger.warning(
            "%s: an evaluation batch of %d clip(s) padded to %.0f s needs about %.1f GB per attention layer; set "
            "eval_chunking=True (chunks of max_duration=%.0f s, averaged) or a smaller eval batch size.",
            self.model_name_or_path, batch_size, samples / self.sampling_rate, need / 1e9, self.max_duration)

    # --- features -----------------------------------------------------------------------
    def frame_mask(self, lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Valid frames per clip from its batch length (samples, or filterbank frames). Shape: ``(batch, num_frames)``."""
        frames = self.backbone._get_feat_extract_output_lengths(lengths).clamp(min=1, max=num_frames)
        return (torch.arange(num_frames, device=lengths.device)[None, :] < frames[:, None]).long()

    def forward_features(self, batch: dict[str, torch.Tensor]) -> Features:
        kwargs: dict[str, Any] = {self.input_name: batch[self.input_name]}
        if self.pass_attention_mask:
            kwargs["attention_mask"] = batch["attention_mask"]
        if self.layer_weights is not None:
            out = self.backbone(**kwargs, output_hidden_states=True)
            hidden = self.layer_weights(out.hidden_states)
        else:
            hidden = self.backbone(**kwargs).last_hidden_state
        mask = self.frame_mask(batch["lengths"], hidden.shape[1])
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        count = weights.sum(1).clamp(min=1.0)
        mean = (hidden * weights).sum(1) / count
        if self.pooling == "stats":
            var = (((hidden - mean[:, None]) ** 2) * weights).sum(1) / count
            pooled = torch.cat([mean, var.clamp(min=1e-8).sqrt()], dim=-1)
        else:
            pooled = mean
        owner = batch.get("chunk_owner")
        if owner is not None:  # average chunks per clip, weighted by their frames
            n = int(owner.max()) + 1
            total = torch.zeros(n, pooled.shape[1], dtype=pooled.dtype, device=pooled.device)
            total.index_add_(0, owner, pooled * count)
            frames = torch.zeros(n, 1, dtype=pooled.dtype, device=pooled.device).index_add_(0, owner, count)
            return Features(pooled=total / frames)
        return Features(pooled=pooled, tokens=hidden, mask=mask)

    # --- groups -------------------------------------------------------------------------
    def _feature_encoder_params(self) -> list[nn.Parameter]:
        return [p for n, p in self.backbone.named_parameters() if n.startswith(("feature_extractor.", "conv_layers."))]

    def unused_parameters(self) -> list[nn.Parameter]:
        return self._feature_encoder_params() if self.freeze_feature_encoder else []

    def head_modules(self) -> list[nn.Module]:
        return [self.layer_weights] if self.layer_weights is not None else []

    def blocks(self) -> nn.ModuleList:
        blocks = getattr(getattr(self.backbone, "encoder", None), "layers", None)
        if not isinstance(blocks, nn.ModuleList):
            from mtransfer.adapters.text import _block_list

            _, blocks = _block_list(self.backbone)
        return blocks

    def random_below_blocks(self) -> str | None:
        config = self.backbone.config
        if getattr(config, "apply_spec_augment", False) and (getattr(config, "mask_time_prob", 0) > 0
                                                            or getattr(config, "mask_feature_prob", 0) > 0):
            return "SpecAugment masks the encoder's input in training (mask_time_prob / mask_feature_prob > 0)"
        if self.layerdrop > 0:
            return f"LayerDrop skips layers at random in training (layerdrop={self.layerdrop})"
        if not self.whole_inputs:
            return f"training takes a random crop of a clip longer than max_duration={self.max_duration:g} s"
        if not self.pass_attention_mask:
            return "the model reads the padding (no attention mask), so a clip's frames depend on its batch"
        return None

    def layer_groups(self) -> list[LayerGroup]:
        encoder = getattr(self.backbone, "encoder", None)
        blocks = self.blocks()
        cnn = {id(p) for p in self._feature_encoder_params()}
        final_norm = getattr(encoder, "layer_norm", None) if getattr(self.backbone.config, "do_stable_layer_norm", False) else None
        after = {id(p) for p in final_norm.parameters()} if isinstance(final_norm, nn.Module) else set()
        in_blocks = {id(p) for p in blocks.parameters()}
        feature_encoder, projection, top = LayerGroup("feature_encoder"), LayerGroup("feature_projection"), LayerGroup("top")
        seen_blocks = False
        for _, p in self.backbone.named_parameters():
            if id(p) in in_blocks:
                seen_blocks = True
            elif id(p) in cnn:
                feature_encoder.params.append(p)
            elif id(p) in after:  # pre-norm ("stable layer norm") models apply it after the last layer
                top.params.append(p)
            else:
                (top if seen_blocks else projection).params.append(p)
        groups = [] if self.freeze_feature_encoder else [feature_encoder]
        groups += [projection] if projection.params else []
        groups += [LayerGroup(f"layer.{i}", modules=[b]) for i, b in enumerate(blocks)]
        return groups + ([top] if top.params else [])

    # --- persistence ----------------------------------------------------------------------
    def feature_fingerprint(self) -> dict[str, Any]:
        return {**super().feature_fingerprint(), "feature_extractor": json.loads(self.feature_extractor.to_json_string())}

    def transformers_form(self) -> NativeForm:
        """``AutoModelForAudioClassification`` with an identity projector: mean pooling, then the head."""
        from transformers import AutoModelForAudioClassification

        if self.pooling != "mean" or self.eval_chunking:
            raise ValueError("audio models export natively with pooling='mean' and eval_chunking=False "
                             f"(this one: pooling={self.pooling!r}, eval_chunking={self.eval_chunking}).")

        def configure(config: Any) -> None:
            config.classifier_proj_size = config.hidden_size
            config.use_weighted_layer_sum = self.layer_weights is not None

        def finish(native: Any) -> None:
            with torch.no_grad():
                native.projector.weight.copy_(torch.eye(native.projector.out_features))
                native.projector.bias.zero_()
                if self.layer_weights is not None:
                    native.layer_weights.copy_(self.layer_weights.weights)

        sample = self.preprocess([(torch.sin(torch.arange(16000) * 0.05) * 0.3, self.sampling_rate)])
        return NativeForm(AutoModelForAudioClassification, self.feature_extractor, sample, configure, finish)

    def get_config(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "max_duration": self.max_duration, "eval_chunking": self.eval_chunking,
                "layer_weighting": self.layer_weights is not None, "freeze_feature_encoder": self.freeze_feature_encoder,
                "layerdrop": self.layerdrop, "source": self.model_name_or_path}

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        self.backbone.save_pretrained(folder)
        self.feature_extractor.save_pretrained(folder)
