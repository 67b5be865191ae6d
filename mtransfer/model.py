"""The transfer model: an adapter (backbone) plus a head, saved without pickle.

A saved model is a folder::

    config.json         mtransfer settings: adapter type and settings, head config, labels, task
    model.safetensors   every weight outside the Hugging Face backbone (the head, adapter extras)
    backbone/           the backbone through its own save_pretrained (+ tokenizer / processor)
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from safetensors.torch import save_file
from torch import nn

from mtransfer.adapters.base import (Adapter, LayerGroup, build_adapter, check_adapter_settings, get_adapter_class,
                                     quiet_transformers)
from mtransfer.atomic import atomic_directory, read_json
from mtransfer.heads import Head, HeadConfig
from mtransfer.record import mtransfer_version
from mtransfer.speech.ctc import greedy_ids
from mtransfer.speech.vocabulary import Vocabulary
from mtransfer.tasks import get_task
from mtransfer.weight_files import check_safetensors, load_safetensors, refuse_unsafe_pickles

FORMAT_VERSION = 1
logger = logging.getLogger(__name__)
HEAD_GROUP = "head"  # the task head's layer group: always last, a name no adapter group may take


@dataclass
class ModelOutput:
    """Outputs of :meth:`TransferModel.forward`.

    Shape:
        logits: ``(batch, num_outputs)``, or ``(batch, frames, vocab)`` for CTC. loss: scalar or
        None. pooled: ``(batch, dim)``. mask: ``(batch, frames)`` or None.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None  # CTC: (batch, frames) valid frames of the logits


def _eval_frozen(module: nn.Module) -> None:
    """Put every largest subtree whose parameters all have ``requires_grad=False`` in eval mode."""
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        module.eval()
        return
    for child in module.children():
        _eval_frozen(child)


def _is_single(inputs: Any) -> bool:
    return isinstance(inputs, (str, os.PathLike))


def _as_list(inputs: Any) -> list[Any]:
    """One text or path -> a list of one; any other sequence -> a list."""
    if _is_single(inputs):
        return [str(inputs) if isinstance(inputs, os.PathLike) else inputs]
    return list(inputs)


def read_model_config(folder: Path) -> dict[str, Any]:
    """The ``config.json`` of an mtransfer model folder, checked; one-line errors naming the file."""
    config_path = folder / "config.json"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder.")
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: not an mtransfer model folder (no config.json); expected the model/ folder "
                                "a training run writes.")
    config = read_json(config_path, "model config")
    if not isinstance(config, dict) or "mtransfer_format" not in config:
        raise ValueError(f"{config_path}: not an mtransfer config (no 'mtransfer_format' key); "
                         "for a plain transformers model use TransferModel.from_backbone.")
    found = config["mtransfer_format"]
    if not isinstance(found, int) or found > FORMAT_VERSION:
        wrote = config.get("mtransfer_version", "a newer version")
        raise ValueError(f"{config_path}: written by mtransfer {wrote} in model format {found!r}; this mtransfer "
                         f"({mtransfer_version()}) reads format {FORMAT_VERSION} at most. Upgrade mtransfer to open it.")
    if "modality" not in config and "adapter_type" in config:  # folders written before 0.2 name it adapter_type
        config["modality"] = config.pop("adapter_type")
    missing = [k for k in ("modality", "adapter", "head", "label_names") if k not in config]
    if missing:
        raise ValueError(f"{config_path}: incomplete mtransfer config (missing {', '.join(missing)}).")
    if not isinstance(config["adapter"], dict):
        raise ValueError(f"{config_path}: 'adapter' must be a mapping of adapter settings.")
    check_adapter_settings(get_adapter_class(config["modality"]).modality,
                           [k for k in config["adapter"] if k != "source"], str(config_path), prefix="adapter.")
    return config


def _head_input_dim(adapter: Adapter, task: str) -> int:
    """The width the head reads: the pooled feature, or the frame features for a task that reads frames (CTC)."""
    if not get_task(task).reads_frames:
        return adapter.embedding_dim
    if not hasattr(adapter, "frame_mask"):
        raise ValueError(f"task={task!r} needs frame features from an audio adapter; the {adapter.modality} adapter "
                         "gives pooled features only.")
    return int(adapter.backbone.config.hidden_size)


def _ctc_vocabulary(adapter: Adapter, vocabulary: Any, label_names: Sequence[str] | None) -> Any:
    if getattr(adapter, "eval_chunking", False):
        raise ValueError("a CTC model reads every frame: set eval_chunking=False on its audio adapter.")
    adapter.whole_inputs = True
    if vocabulary is None:
        vocabulary = Vocabulary(list(label_names or []))
    return vocabulary


class TransferModel(nn.Module):
    """An adapter and a head: raw inputs in, predictions out.

    Args:
        adapter: The modality adapter around the backbone.
        head: The task head on the adapter's pooled features.
        label_names: Class / label names (classification) or target names (regression).

    >>> model = TransferModel.from_backbone("text", "path/to/bert", labels=["neg", "pos"])  # doctest: +SKIP
    >>> model.predict(["what a film"])  # doctest: +SKIP
    ['pos']
    """

    def __init__(self, adapter: Adapter, head: Head, label_names: Sequence[str] | None = None,
                 vocabulary: Any = None) -> None:
        super().__init__()
        self.adapter = adapter
        self.head = head
        if head.kind.transcribes:
            vocabulary = _ctc_vocabulary(adapter, vocabulary, label_names)
            label_names = vocabulary.symbols
        self.vocabulary = vocabulary
        self.label_names = list(label_names) if label_names is not None else [str(i) for i in range(head.config.num_outputs)]
        if len(self.label_names) != head.config.num_outputs:
            raise ValueError(f"{len(self.label_names)} label names for a head with {head.config.num_outputs} outputs.")
        self._adapter_trains = True
        self.loaded_from: Path | None = None  # the folder from_pretrained read, if any
        # the trained mtransfer model this one took its backbone from (with_new_head on a loaded model), or None
        self.started_from: dict[str, Any] | None = None

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        modality: str,
        model_name_or_path: str | os.PathLike,
        *,
        labels: Sequence[str] | int | Any,
        task: str = "single_label_classification",
        head: HeadConfig | dict[str, Any] | None = None,
        seed: int | None = None,
        **adapter_kwargs: Any,
    ) -> TransferModel:
        """A new model: a pretrained backbone and a freshly initialised head.

        Args:
            modality: Adapter name (``"text"``).
            model_name_or_path: Hub id or local folder of the backbone.
            labels: Label names (or their number); for ``task="ctc"`` the
                :class:`~mtransfer.speech.vocabulary.Vocabulary` (e.g. ``train.vocabulary``).
            task: The head task (``ctc``: speech recognition on an audio adapter's frames).
            head: Head settings (``hidden_sizes``, ``dropout``, ``activation``); ``task``,
                ``num_outputs`` and ``input_dim`` are filled in.
            seed: Seeds the head's initialisation (and a random-init backbone's).
            **adapter_kwargs: Passed to the adapter (``max_length``, ``pooling``, ``pretrained``...).
        """
        vocabulary, names = get_task(task).labels(labels)
        if seed is not None:
            torch.manual_seed(seed)
        adapter = build_adapter(modality, model_name_or_path, **adapter_kwargs)
        settings = asdict(head) if isinstance(head, HeadConfig) else dict(head or {})
        settings.update(task=task, num_outputs=len(names), input_dim=_head_input_dim(adapter, task))
        return cls(adapter, Head(HeadConfig(**settings)), names, vocabulary)

    def with_new_head(self, labels: Sequence[str] | int | Any, *, task: str | None = None,
                      head: HeadConfig | dict[str, Any] | None = None, copy_shared_rows: bool = True,
                      seed: int | None = None) -> TransferModel:
        """Keep the backbone (and adapter) as trained, put a new head on it for a new label set or task; returns self.

        This is the step of sequential transfer: a model trained on one task becomes the start
        of another (a text classifier for a new topic set; a Bengali CTC model for Assamese).
        Between two CTC vocabularies, the output rows of the symbols both share are copied
        from the old head (``copy_shared_rows``; the count is logged), so with a shared phone
        inventory the whole head carries over.

        Args:
            labels: The new label names (or their number), or the new
                :class:`~mtransfer.speech.vocabulary.Vocabulary` for ``task="ctc"``.
            task: The new head's task (default: the current one).
            head: Head settings (default: the current head's ``hidden_sizes``, ``dropout``, ``activation``).
            copy_shared_rows: CTC to CTC: start shared symbols from their trained rows.
            seed: Seeds the new head's initialisation.
        """
        old_task = self.task
        task = task or old_task
        kind = get_task(task)
        vocabulary, names = kind.labels(labels)
        if seed is not None:
            torch.manual_seed(seed)
        settings = {k: v for k, v in asdict(self.head.config).items() if k in ("hidden_sizes", "dropout", "activation")}
        if kind.reads_frames or self.head.kind.reads_frames:  # a frame head is one linear layer
            settings["hidden_sizes"] = []
        settings.update(asdict(head) if isinstance(head, HeadConfig) else dict(head or {}))
        settings.update(task=task, num_outputs=len(names), input_dim=_head_input_dim(self.adapter, task))
        new = Head(HeadConfig(**settings)).to(next(self.head.parameters()).device)
        copied = None
        if copy_shared_rows and kind.transcribes and self.head.kind.transcribes:
            old = {s: i for i, s in enumerate(self.label_names)}
            pairs = [(j, old[s]) for j, s in enumerate(names) if s in old]
            with torch.no_grad():
                for j, i in pairs:
                    new.out.weight[j] = self.head.out.weight[i]
                    new.out.bias[j] = self.head.out.bias[i]
            logger.info("with_new_head: copied %d of %d output rows (symbols both vocabularies share)", len(pairs), len(names))
            self.copied_rows = copied = len(pairs)
        if self.loaded_from is not None:  # provenance: the card and records name the model this one started from
            self.started_from = {"model": str(self.loaded_from), "base": self.adapter.get_config().get("source"),
                                 "task": old_task, "copied_rows": copied}
        self.head = new
        if kind.transcribes:
            vocabulary = _ctc_vocabulary(self.adapter, vocabulary, names)
        self.vocabulary = vocabulary
        self.label_names = names
        self.adapter.whole_inputs = kind.reads_frames
        return self

    def reset_head(self, labels: Sequence[str] | int) -> None:
        """Replace the head with a fresh one for a new label set (timm's ``reset_classifier``)."""
        self.with_new_head(labels, copy_shared_rows=False)

    @property
    def task(self) -> str:
        return self.head.task

    # --- layer groups and freezing --------------------------------------------------------
    def layer_groups(self) -> list[LayerGroup]:
        """The adapter's groups (input side first) and the head last.

        Groups are held by position: plans, optimizer param groups and schedules refer to them by
        index, and their names are labels for people. Names must still be unique, and ``head``
        belongs to the task head.

        Raises:
            ValueError: The adapter has two groups of one name, or a group named ``head``.
        """
        groups = self.adapter.layer_groups()
        names = [g.name for g in groups]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes or HEAD_GROUP in names:
            what = f"duplicate layer-group names {dupes}" if dupes else f"a layer group named {HEAD_GROUP!r}"
            raise ValueError(f"The {self.adapter.modality} adapter of {getattr(self.adapter, 'model_name_or_path', '?')} "
                             f"has {what} ({names}); group names must be unique and {HEAD_GROUP!r} is reserved for the "
                             "task head (rename the backbone's group, e.g. 'conv_head').")
        new = self.adapter.head_modules()
        covered = {id(p) for g in groups for p in g.parameters()}
        covered |= {id(p) for p in self.adapter.unused_parameters()} | {id(p) for m in new for p in m.parameters()}
        extra = [p for p in self.adapter.parameters() if id(p) not in covered]
        if extra:  # adapter parameters no group names (e.g. a layer-weighting vector) train with the top group
            groups[-1].params.extend(extra)
        return [*groups, LayerGroup(HEAD_GROUP, modules=[self.head, *new])]

    def group_indices(self, trainable: Iterable[int | str], groups: list[LayerGroup] | None = None) -> set[int]:
        """Positions of layer groups given by position or by (unique) name (``groups``: this model's, if already built)."""
        groups = groups if groups is not None else self.layer_groups()
        names = {g.name: i for i, g in enumerate(groups)}
        out = set()
        for item in trainable:
            if isinstance(item, str):
                if item not in names:
                    raise ValueError(f"Unknown layer group {item!r}; this model has {list(names)}.")
                out.add(names[item])
            elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(groups):
                out.add(item)
            else:
                raise ValueError(f"Layer group {item!r}: expected a name or a position 0..{len(groups) - 1}.")
        return out

    def set_trainable(self, trainable: Iterable[int | str]) -> None:
        """Train exactly the given groups (positions, or names as labels): ``requires_grad`` on, train mode; others frozen, eval mode.

        Frozen parts run in eval mode (no dropout, frozen batch-norm statistics), so their
        output is the deterministic feature a cache or a linear model would see.
        """
        groups = self.layer_groups()
        indices = self.group_indices(trainable, groups)
        head = len(groups) - 1
        for i, g in enumerate(groups):
            for p in g.parameters():
                p.requires_grad_(i in indices)
        for p in self.adapter.unused_parameters():
            p.requires_grad_(False)
        self._adapter_trains = any(i < head for i in indices) or (head in indices and bool(self.adapter.head_modules()))
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferModel:
        """Set train / eval mode; in train mode, every submodule whose parameters are all frozen stays in eval, and
        with :attr:`frozen_norm_stats` every batch-norm layer of the backbone too (its running statistics are kept;
        its scale and shift still train when their group does)."""
        super().train(mode)
        if mode:
            _eval_frozen(self)
            if getattr(self, "frozen_norm_stats", False):
                for module in self.adapter.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        return self

    # --- forward ------------------------------------------------------------------------
    def forward(self, inputs: dict[str, torch.Tensor] | None = None, labels: torch.Tensor | None = None,
                features: torch.Tensor | None = None, frame_mask: torch.Tensor | None = None,
                block_input: torch.Tensor | None = None, block_index: torch.Tensor | int | None = None,
                **_: Any) -> ModelOutput:
        """Head outputs (and the loss when ``labels`` are given).

        Pass either ``inputs`` (a batch from the adapter's ``preprocess``) or ``features``
        (pooled features, e.g. from a :class:`~mtransfer.cache.FeatureCache`), which skips the backbone.
        A CTC model takes cached frame features with their ``frame_mask``. With ``block_input``
        (cached hidden states entering block ``block_index``, :mod:`mtransfer.partial_cache`) the
        backbone runs from that block up.

        Shape:
            features: ``(batch, embedding_dim)``; CTC: ``(batch, frames, dim)`` and ``frame_mask`` ``(batch, frames)``.
            block_input: ``(batch, positions, dim)``.
        """
        if self.head.kind.reads_frames:
            return self._forward_ctc(inputs, labels, features, frame_mask, block_input, block_index)
        if features is None:
            if inputs is None:
                raise ValueError("TransferModel.forward needs inputs or features.")
            with torch.set_grad_enabled(torch.is_grad_enabled() and self._adapter_trains):
                features = self._features(inputs, block_input, block_index).pooled
        logits = self.head(features)
        loss = self.head.loss(logits, labels) if labels is not None else None
        return ModelOutput(logits=logits, loss=loss, pooled=features)

    def _features(self, inputs: dict[str, torch.Tensor], block_input: torch.Tensor | None,
                  block_index: torch.Tensor | int | None) -> Any:
        if block_input is None:
            return self.adapter.forward_features(inputs)
        return self.adapter.forward_from_block(inputs, block_input, int(block_index))

    def _forward_ctc(self, inputs: dict[str, torch.Tensor] | None, labels: torch.Tensor | None,
                     frames: torch.Tensor | None = None, frame_mask: torch.Tensor | None = None,
                     block_input: torch.Tensor | None = None, block_index: torch.Tensor | int | None = None) -> ModelOutput:
        if frames is not None:  # cached frame features: the head alone
            if frames.dim() != 3 or frame_mask is None:
                raise ValueError("a CTC model reads frames: cached features must be (batch, frames, dim) with a "
                                 "frame_mask (FeatureCache.features(..., frames=True)), not pooled vectors.")
            logits = self.head(frames)
            loss = self.head.loss(logits, labels, frame_mask) if labels is not None else None
            return ModelOutput(logits=logits, loss=loss, mask=frame_mask)
        if inputs is None:
            raise ValueError("a CTC model reads frames: pass inputs or cached frame features with their frame_mask.")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._adapter_trains):
            feats = self._features(inputs, block_input, block_index)
        if feats.tokens is None or feats.mask is None:
            raise ValueError(f"the {self.adapter.modality} adapter gave no frame features for this batch; CTC needs "
                             "an audio adapter without eval_chunking.")
        logits = self.head(feats.tokens)
        loss = self.head.loss(logits, labels, feats.mask) if labels is not None else None
        return ModelOutput(logits=logits, loss=loss, pooled=feats.pooled, mask=feats.mask)

    @torch.no_grad()
    def _ctc_outputs(self, inputs: Sequence[Any] | str | os.PathLike, batch_size: int) -> Iterator[ModelOutput]:
        """CTC models: frame logits and masks of ``inputs``, a batch at a time, in eval mode."""
        if not self.head.kind.transcribes:
            raise ValueError(f"transcribe is for CTC models; this one does {self.task}.")
        inputs = _as_list(inputs)
        self.adapter.validate_inputs(inputs)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            for start in range(0, len(inputs), batch_size):
                batch = {k: v.to(device) for k, v in self.adapter.preprocess(list(inputs[start:start + batch_size])).items()}
                yield self(batch)
        finally:
            self.train(was_training)

    def transcribe_ids(self, inputs: Sequence[Any] | str | os.PathLike, batch_size: int = 16) -> list[list[int]]:
        """CTC models: the greedy best symbol id of every valid frame, per input (not collapsed)."""
        return [ids for res in self._ctc_outputs(inputs, batch_size) for ids in greedy_ids(res.logits, res.mask)]

    def transcribe(self, inputs: Sequence[Any] | str | os.PathLike, batch_size: int = 16,
                   decoder: Any = None) -> list[str] | str:
        """CTC models: transcripts; greedy (repeats merged, blanks dropped, ``|`` as spaces) unless ``decoder``
        (a :class:`~mtransfer.speech.decoding.BeamSearchDecoder`, optionally with a KenLM n-gram) is given."""
        if decoder is None:
            texts = [self.vocabulary.decode(ids) for ids in self.transcribe_ids(inputs, batch_size)]
            return texts[0] if _is_single(inputs) else texts
        if self.vocabulary is not None and decoder.vocabulary.symbols != self.vocabulary.symbols:
            raise ValueError("the decoder was built for another vocabulary than this model's.")
        texts = [t for res in self._ctc_outputs(inputs, batch_size) for t in decoder.decode(res.logits, res.mask)]
        return texts[0] if _is_single(inputs) else texts

    @torch.no_grad()
    def predict_outputs(self, inputs: Sequence[Any] | str | os.PathLike, batch_size: int = 32) -> torch.Tensor:
        """Raw head outputs for raw inputs, in batches, in eval mode. Shape: ``(n, num_outputs)``.

        A single text or path counts as one input (not as a sequence of characters).
        """
        inputs = _as_list(inputs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: expected an integer >= 1.")
        if self.head.kind.reads_frames:
            raise ValueError("a CTC model's outputs differ in length per input: use transcribe / transcribe_ids.")
        self.adapter.validate_inputs(inputs)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        outs = []
        try:
            for start in range(0, len(inputs), batch_size):
                batch = self.adapter.preprocess(list(inputs[start:start + batch_size]))
                batch = {k: v.to(device) for k, v in batch.items()}
                outs.append(self(batch).logits.float().cpu())
        finally:
            self.train(was_training)
        return torch.cat(outs) if outs else torch.zeros(0, self.head.config.num_outputs)

    def decode(self, outputs: torch.Tensor) -> list[Any]:
        """Predictions from raw head outputs: label names, lists of label names, or values in original units."""
        return self.head.kind.decode(self.head.predict(outputs).tolist(), self.label_names)

    def predict(self, inputs: Sequence[Any] | str | os.PathLike, batch_size: int = 32) -> list[Any] | Any:
        """Predictions for raw inputs (see :meth:`decode`; transcripts for CTC); a single text or path gives a single prediction."""
        if self.head.kind.transcribes:
            return self.transcribe(inputs, batch_size)
        preds = self.decode(self.predict_outputs(inputs, batch_size))
        return preds[0] if _is_single(inputs) else preds

    def predict_proba(self, inputs: Sequence[Any] | str | os.PathLike, batch_size: int = 32) -> torch.Tensor:
        """Class probabilities (softmax, or per-label sigmoid for multi-label). Shape: ``(n, labels)``, or ``(labels,)`` for a single input."""
        if not self.head.kind.has_class_names:
            raise ValueError("predict_proba is for classification; this model does regression (use predict).")
        scores = self.head.scores(self.predict_outputs(inputs, batch_size))
        return scores[0] if _is_single(inputs) else scores

    # --- persistence --------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {
            "mtransfer_format": FORMAT_VERSION,
            "mtransfer_version": mtransfer_version(),
            "modality": self.adapter.modality,
            "adapter": self.adapter.get_config(),
            "head": asdict(self.head.config),
            "task": self.task,
            "label_names": self.label_names,
            **({"vocabulary": self.vocabulary.to_dict()} if self.head.kind.transcribes else {}),
            **({"started_from": self.started_from} if self.started_from else {}),
        }

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the model folder atomically (see the module docstring for its layout)."""
        folder = Path(folder)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if not k.startswith("adapter.backbone.")}
        with atomic_directory(folder) as tmp, quiet_transformers():
            (tmp / "config.json").write_text(json.dumps(self.get_config(), indent=2))
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            self.adapter.save_pretrained(tmp / "backbone")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *, trust_remote_code: bool = False,
                        **adapter_overrides: Any) -> TransferModel:
        """Load a folder written by :meth:`save_pretrained`.

        Opening a folder imports and runs no code named in it unless ``trust_remote_code=True``
        (a ``torch`` backbone saved from a user class names its import path).

        Args:
            folder: The model folder.
            trust_remote_code: Allow the adapter to import code the folder names.
            **adapter_overrides: Passed to the adapter's ``from_pretrained`` (e.g. ``module=`` for
                a ``torch`` backbone whose class cannot be rebuilt by import).

        Raises:
            FileNotFoundError: Not a model folder (no ``config.json``) or no ``backbone/``.
            ValueError: A config that is not mtransfer's or cannot be read; corrupt weights.
        """
        import inspect


        folder = Path(folder).expanduser()
        config = read_model_config(folder)
        adapter_cls = get_adapter_class(config["modality"])
        if "trust_remote_code" in inspect.signature(adapter_cls.__init__).parameters:
            adapter_overrides.setdefault("trust_remote_code", trust_remote_code)
        if not (folder / "backbone").is_dir():
            raise FileNotFoundError(f"{folder}: the model folder has no backbone/ sub-folder (written by save_pretrained "
                                    "with the backbone's weights); copy the whole folder.")
        for weights in sorted((folder / "backbone").rglob("*.safetensors")):  # a cut-off file is named, not a Rust panic
            check_safetensors(weights)
        with quiet_transformers(), refuse_unsafe_pickles(folder / "backbone"):
            adapter = adapter_cls.from_pretrained(folder / "backbone", **{**config["adapter"], **adapter_overrides})
        vocabulary = None
        if get_task(config["head"].get("task", "single_label_classification")).transcribes:
            vocabulary = Vocabulary.from_dict(config.get("vocabulary") or {"symbols": config["label_names"]})
        model = cls(adapter, Head(HeadConfig(**config["head"])), config["label_names"], vocabulary)
        state = load_safetensors(folder / "model.safetensors")
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("adapter.backbone.")]
        if missing or unexpected:
            raise ValueError(f"{folder / 'model.safetensors'}: weights do not match the config "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]}).")
        model.eval()
        model.loaded_from = folder.resolve()  # an export or save must never write over the folder it came from
        model.started_from = config.get("started_from")
        return model

    def __repr__(self) -> str:
        a = self.adapter
        n_train = sum(p.numel() for p in self.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in self.parameters())
        return (f"TransferModel(adapter={a.modality}:{getattr(a, 'model_name_or_path', '?')}, task={self.task}, "
                f"labels={self.label_names[:6]}{'...' if len(self.label_names) > 6 else ''}, "
                f"groups={[g.name for g in self.layer_groups()][:3]}..., params={n_all:,} ({n_train:,} trainable))")
