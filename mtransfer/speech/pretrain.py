"""Self-supervised continued pretraining of a wav2vec2-style encoder on unlabelled audio.

``Wav2Vec2ForPreTraining``'s objective (Baevski et al., 2020): spans of the encoder's input
frames are masked, and the contextual output at each masked frame must pick the true quantized
latent among distractors from the same utterance (contrastive loss), while a diversity loss
keeps the Gumbel-softmax codebooks in use. This is how a model "pretrains on" a source
language that has audio but no transcripts, e.g. the one the language-ID scorer ranks first.

The loop runs on Accelerate. Each epoch ends with a checkpoint written by the trainer's own
:class:`~mtransfer.checkpoints.Checkpoints` (atomic, with the run's identity, so resuming another
run's checkpoint is refused and a damaged one is named); random crops and masks are drawn from a generator seeded by
``(seed, epoch, batch)``, and the data order by ``(seed, epoch)``, so a killed run resumed from
its last checkpoint ends with the same weights as an uninterrupted one. The result is a model
folder (the whole ``Wav2Vec2ForPreTraining``, with its feature extractor) that the audio
adapter loads as an encoder (``TransferModel.from_backbone("audio", folder, ...)``) and that
this function can continue from again.

>>> continue_pretraining("builtin:wav2vec2-small", ["a.wav", "b.wav"], PretrainArguments("out"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mtransfer.adapters.base import load_pretrained, quiet_transformers
from mtransfer.atomic import atomic_directory
from mtransfer.builtins import resolve_model
from mtransfer.checkpoints import Checkpoints, TrainerState, run_identity
from mtransfer.data import EpochShuffleSampler
from mtransfer.media import load_audio, media_fingerprint


@dataclass
class PretrainArguments:
    """Settings of :func:`continue_pretraining`.

    Attributes:
        output_dir: Run folder: ``model/`` (the result) and ``checkpoints/epoch_<n>/``.
        num_epochs: Passes over the audio.
        learning_rate: Peak AdamW rate (linear warmup, then linear decay).
        warmup_ratio: Warmup fraction of all steps.
        batch_size: Clips per step (per process).
        max_duration: Seconds per clip; longer clips are randomly cropped.
        mask_time_prob: Fraction of frames that start a masked span (wav2vec 2.0: 0.65).
        mask_time_length: Frames per masked span (wav2vec 2.0: 10).
        max_gumbel_temperature / min_gumbel_temperature / gumbel_temperature_decay: The
            codebook temperature, decayed per step from the first to the second.
        weight_decay: AdamW weight decay.
        max_grad_norm: Gradient clipping (0: none).
        seed: Data order, crops, masks and dropout.
        resume_from_checkpoint: ``"latest"`` or a checkpoint folder.
        progress_bar: tqdm bars.
    """
    output_dir: str
    num_epochs: int = 10
    learning_rate: float = 5e-4
    warmup_ratio: float = 0.1
    batch_size: int = 8
    max_duration: float = 10.0
    mask_time_prob: float = 0.65
    mask_time_length: int = 10
    max_gumbel_temperature: float = 2.0
    min_gumbel_temperature: float = 0.5
    gumbel_temperature_decay: float = 0.999995
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    resume_from_checkpoint: str | None = None
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if self.num_epochs < 1 or self.batch_size < 1:
            raise ValueError(f"PretrainArguments: num_epochs and batch_size must be >= 1 (got {self.num_epochs}, "
                             f"{self.batch_size}).")
        if not 0.0 < self.mask_time_prob < 1.0:
            raise ValueError(f"PretrainArguments.mask_time_prob={self.mask_time_prob}: expected a fraction in (0, 1).")
        if self.learning_rate <= 0 or self.max_duration <= 0:
            raise ValueError("PretrainArguments: learning_rate and max_duration must be > 0.")


@dataclass
class PretrainResult:
    model_dir: str
    history: list[dict[str, float]]
    seconds: float


class _Batches:
    """Collate clips into a pretraining batch: crop, extract, pad, mask, sample negatives (seeded per batch)."""
    def __init__(self, model: Any, extractor: Any, args: PretrainArguments) -> None:
        self.model, self.extractor, self.args = model, extractor, args
        self.rate = int(extractor.sampling_rate)

    def __call__(self, items: list[tuple[Any, int]]) -> dict[str, torch.Tensor]:
        from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices


        key = items[0][1]  # the batch's first index and the epoch make the seed
        rng = np.random.default_rng([self.args.seed, self._epoch, key])
        limit = int(self.args.max_duration * self.rate)
        waves = []
        for item, _ in items:
            wav = load_audio(item, self.rate).numpy()
            if len(wav) > limit:
                start = int(rng.integers(0, len(wav) - limit + 1))
                wav = wav[start:start + limit]
            waves.append(wav)
        batch = self.extractor(waves, sampling_rate=self.rate, padding=True, return_attention_mask=True,
                               return_tensors="pt")
        lengths = batch["attention_mask"].sum(-1)
        frames = int(self.model._get_feat_extract_output_lengths(torch.tensor(batch["input_values"].shape[1])))
        sub_lengths = self.model._get_feat_extract_output_lengths(lengths).long()
        sub_mask = (torch.arange(frames)[None, :] < sub_lengths[:, None]).long()
        state = np.random.get_state()
        np.random.seed(int(rng.integers(0, 2**31 - 1)))  # transformers' mask and negative samplers draw from numpy
        try:
            mask = _compute_mask_indices((len(waves), frames), self.args.mask_time_prob, self.args.mask_time_length,
                                         attention_mask=sub_mask, min_masks=2)
            negatives = _sample_negative_indices((len(waves), frames), self.model.config.num_negatives,
                                                 mask_time_indices=mask)
        finally:
            np.random.set_state(state)
        return {"input_values": batch["input_values"], "attention_mask": batch["attention_mask"],
                "mask_time_indices": torch.tensor(mask, dtype=torch.long),
                "sampled_negative_indices": torch.tensor(negatives, dtype=torch.long)}

    _epoch = 0


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, audio: Sequence[Any]) -> None:
        self.audio = list(audio)

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.audio[i], i


def load_for_pretraining(model_name_or_path: str) -> tuple[Any, Any]:
    """``(Wav2Vec2ForPreTraining, feature extractor)`` of a wav2vec2 encoder; a model of another kind is refused."""
    from transformers import AutoConfig, AutoFeatureExtractor, Wav2Vec2ForPreTraining


    path = resolve_model(str(model_name_or_path))
    with quiet_transformers():
        config = load_pretrained(AutoConfig.from_pretrained, path, "model config")
        if config.model_type != "wav2vec2":
            raise ValueError(f"{model_name_or_path}: continued pretraining trains wav2vec2 encoders "
                             f"(Wav2Vec2ForPreTraining); this model is a {config.model_type!r}.")
        model = load_pretrained(Wav2Vec2ForPreTraining.from_pretrained, path, "wav2vec2 model")
        extractor = load_pretrained(AutoFeatureExtractor.from_pretrained, path, "audio feature extractor")
    if not getattr(extractor, "return_attention_mask", False):
        raise ValueError(f"{model_name_or_path}: continued pretraining needs a feature extractor with attention masks "
                         "(a layer-norm wav2vec2, feat_extract_norm='layer').")
    return model, extractor


def continue_pretraining(model_name_or_path: str | os.PathLike, audio: Sequence[Any],
                         args: PretrainArguments) -> PretrainResult:
    """Continue the self-supervised pretraining of a wav2vec2 encoder on ``audio`` (paths, arrays or ``(wave, rate)``).

    Returns:
        Where the model folder is, the per-epoch mean loss (contrastive + diversity, per masked
        frame) and codebook perplexity, and the seconds taken.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm


    if len(audio) < 1:
        raise ValueError("continue_pretraining needs at least one audio clip.")
    out = Path(args.output_dir)
    set_seed(args.seed)  # weights the checkpoint lacks (a new quantizer) are initialised from it
    model, extractor = load_for_pretraining(str(model_name_or_path))
    model.config.mask_time_prob = args.mask_time_prob
    model.config.mask_time_length = args.mask_time_length
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    collate = _Batches(model, extractor, args)
    sampler = EpochShuffleSampler(len(audio), args.seed)
    loader = DataLoader(_Indexed(audio), batch_size=args.batch_size, sampler=sampler, collate_fn=collate)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.learning_rate)
    steps_per_epoch = math.ceil(len(audio) / args.batch_size / accelerator.num_processes)
    total = steps_per_epoch * args.num_epochs
    warmup = max(1, int(args.warmup_ratio * total))
    schedule = lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    unwrapped = accelerator.unwrap_model(model)
    identity = run_identity(asdict(args), {"adapter": {"source": str(model_name_or_path)}},
                            {"audio": media_fingerprint(audio)})
    checkpoints = Checkpoints(out, accelerator, identity, limit=None, keep="all")  # the trainer's: atomic, checked, resumable
    state = {"epoch": -1, "step": 0, "history": []}
    if args.resume_from_checkpoint:
        saved = checkpoints.resume(args.resume_from_checkpoint, unwrapped)
        state = {"epoch": saved.epoch, "step": saved.global_step, "history": saved.history}
        scheduler.last_epoch = state["step"] - 1
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended, it sets the step's rate
            warnings.simplefilter("ignore")
            scheduler.step()
    else:
        checkpoints.start_fresh(overwrite=True)  # a new run replaces this folder's earlier pretraining checkpoints
    start = time.perf_counter()
    for epoch in range(state["epoch"] + 1, args.num_epochs):
        loader.set_epoch(epoch)  # Accelerate's loader passes its own epoch count to the sampler: keep them one
        collate._epoch = epoch
        model.train()
        totals = torch.zeros(3, device=accelerator.device)  # loss sum, masked frames, perplexity sum
        batches = 0
        for batch in tqdm(loader, desc=f"pretrain epoch {epoch + 1}/{args.num_epochs}", leave=False,
                          disable=not (args.progress_bar and accelerator.is_local_main_process)):
            unwrapped.set_gumbel_temperature(max(args.max_gumbel_temperature * args.gumbel_temperature_decay ** state["step"],
                                                 args.min_gumbel_temperature))
            outputs = model(**batch)
            masked = batch["mask_time_indices"].sum()
            loss = outputs.loss / masked.clamp(min=1)
            accelerator.backward(loss)
            if args.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            totals += torch.stack([outputs.loss.detach().float(), masked.float(), outputs.codevector_perplexity.detach().float()])
            batches += 1
        totals = accelerator.reduce(totals, reduction="sum")
        record = {"epoch": epoch + 1, "loss": float(totals[0] / totals[1].clamp(min=1)),
                  "codevector_perplexity": float(totals[2] / max(1, batches * accelerator.num_processes))}
        state["history"].append(record)
        state["epoch"] = epoch
        if accelerator.is_local_main_process:
            tqdm.write(f"pretrain epoch {epoch + 1}/{args.num_epochs} loss={record['loss']:.4f} "
                       f"perplexity={record['codevector_perplexity']:.1f}")
        checkpoints.save(epoch, TrainerState(epoch=epoch, global_step=state["step"], history=state["history"]))
    seconds = time.perf_counter() - start
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with atomic_directory(out / "model") as tmp:
            unwrapped.save_pretrained(tmp)
            extractor.save_pretrained(tmp)
            (tmp / "pretrain_history.json").write_text(json.dumps({"args": asdict(args), "history": state["history"]}, indent=1))
    accelerator.wait_for_everyone()
    return PretrainResult(str(out / "model"), state["history"], seconds)
