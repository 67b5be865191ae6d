"""The transfer model: an adapter (backbone) plus a head, saved without pickle.

A saved model is a folder::

    config.json         mtransfer settings: adapter type and settings, head config, labels, task
    model.safetensors   every weight outside the Hugging Face backbone (the head, adapter extras)
    backbone/           the backbone through its own save_pretrained (+ tokenizer / processor)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mtransfer.adapters.base import Adapter, LayerGroup, get_adapter_class, quiet_transformers
from mtransfer.atomic import atomic_directory
from mtransfer.heads import Head, HeadConfig

FORMAT_VERSION = 1


@dataclass
class ModelOutput:
    """Outputs of :meth:`TransferModel.forward`.

    Shape:
        logits: ``(batch, num_outputs)``. loss: scalar or None. pooled: ``(batch, dim)``.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    pooled: torch.Tensor | None = None


def _eval_frozen(module: nn.Module) -> None:
    """Put every largest subtree whose parameters all have ``requires_grad=False`` in eval mode."""
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        module.eval()
        return
    for child in module.children():
        _eval_frozen(child)


def build_adapter(modality: str, model_name_or_path: str | os.PathLike, **adapter_kwargs: Any) -> Adapter:
    """Build the adapter registered as ``modality`` (``"text"``, ...)."""
    import mtransfer.adapters  # noqa: F401  (registers the built-in adapters)

    with quiet_transformers():
        return get_adapter_class(modality)(model_name_or_path, **adapter_kwargs)


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

    def __init__(self, adapter: Adapter, head: Head, label_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.adapter = adapter
        self.head = head
        self.label_names = list(label_names) if label_names is not None else [str(i) for i in range(head.config.num_outputs)]
        if len(self.label_names) != head.config.num_outputs:
            raise ValueError(f"{len(self.label_names)} label names for a head with {head.config.num_outputs} outputs.")
        self._adapter_trains = True

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        modality: str,
        model_name_or_path: str | os.PathLike,
        *,
        labels: Sequence[str] | int,
        task: str = "single_label_classification",
        head: HeadConfig | dict[str, Any] | None = None,
        seed: int | None = None,
        **adapter_kwargs: Any,
    ) -> TransferModel:
        """A new model: a pretrained backbone and a freshly initialised head.

        Args:
            modality: Adapter name (``"text"``).
            model_name_or_path: Hub id or local folder of the backbone.
            labels: Label names (or their number).
            task: The head task.
            head: Head settings (``hidden_sizes``, ``dropout``, ``activation``); ``task``,
                ``num_outputs`` and ``input_dim`` are filled in.
            seed: Seeds the head's initialisation (and a random-init backbone's).
            **adapter_kwargs: Passed to the adapter (``max_length``, ``pooling``, ``pretrained``...).
        """
        names = [str(i) for i in range(labels)] if isinstance(labels, int) else [str(x) for x in labels]
        if seed is not None:
            torch.manual_seed(seed)
        adapter = build_adapter(modality, model_name_or_path, **adapter_kwargs)
        settings = asdict(head) if isinstance(head, HeadConfig) else dict(head or {})
        settings.update(task=task, num_outputs=len(names), input_dim=adapter.embedding_dim)
        return cls(adapter, Head(HeadConfig(**settings)), names)

    def reset_head(self, labels: Sequence[str] | int) -> None:
        """Replace the head with a fresh one for a new label set (timm's ``reset_classifier``)."""
        names = [str(i) for i in range(labels)] if isinstance(labels, int) else [str(x) for x in labels]
        self.head = self.head.reset(len(names))
        self.label_names = names

    @property
    def task(self) -> str:
        return self.head.task

    # --- layer groups and freezing --------------------------------------------------------
    def layer_groups(self) -> list[LayerGroup]:
        """The adapter's groups (input side first) and the head last."""
        groups = self.adapter.layer_groups()
        new = self.adapter.head_modules()
        covered = {id(p) for g in groups for p in g.parameters()}
        covered |= {id(p) for p in self.adapter.unused_parameters()} | {id(p) for m in new for p in m.parameters()}
        extra = [p for p in self.adapter.parameters() if id(p) not in covered]
        if extra:  # adapter parameters no group names (e.g. a layer-weighting vector) train with the top group
            groups[-1].params.extend(extra)
        return [*groups, LayerGroup("head", modules=[self.head, *new])]

    def set_trainable(self, trainable: set[str] | Sequence[str]) -> None:
        """Train exactly the named groups: ``requires_grad`` on, train mode; others frozen, eval mode.

        Frozen parts run in eval mode (no dropout, frozen batch-norm statistics), so their
        output is the deterministic feature a cache or a linear model would see.
        """
        trainable = set(trainable)
        groups = self.layer_groups()
        known = {g.name for g in groups}
        unknown = trainable - known
        if unknown:
            raise ValueError(f"Unknown layer groups {sorted(unknown)}; this model has {[g.name for g in groups]}.")
        for g in groups:
            for p in g.parameters():
                p.requires_grad_(g.name in trainable)
        for p in self.adapter.unused_parameters():
            p.requires_grad_(False)
        self._adapter_trains = (any(g.name in trainable for g in groups if g.name != "head")
                                or ("head" in trainable and bool(self.adapter.head_modules())))
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferModel:
        """Set train / eval mode; in train mode, every submodule whose parameters are all frozen stays in eval."""
        super().train(mode)
        if mode:
            _eval_frozen(self)
        return self

    # --- forward ------------------------------------------------------------------------
    def forward(self, inputs: dict[str, torch.Tensor] | None = None, labels: torch.Tensor | None = None,
                features: torch.Tensor | None = None, **_: Any) -> ModelOutput:
        """Head outputs (and the loss when ``labels`` are given).

        Pass either ``inputs`` (a batch from the adapter's ``preprocess``) or ``features``
        (pooled features, e.g. from a :class:`~mtransfer.cache.FeatureCache`), which skips the backbone.

        Shape:
            features: ``(batch, embedding_dim)``.
        """
        if features is None:
            if inputs is None:
                raise ValueError("TransferModel.forward needs inputs or features.")
            with torch.set_grad_enabled(torch.is_grad_enabled() and self._adapter_trains):
                features = self.adapter.forward_features(inputs).pooled
        logits = self.head(features)
        loss = self.head.loss(logits, labels) if labels is not None else None
        return ModelOutput(logits=logits, loss=loss, pooled=features)

    @torch.no_grad()
    def predict_outputs(self, inputs: Sequence[Any], batch_size: int = 32) -> torch.Tensor:
        """Raw head outputs for raw inputs, in batches, in eval mode. Shape: ``(n, num_outputs)``."""
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

    def predict(self, inputs: Sequence[Any], batch_size: int = 32) -> list[Any]:
        """Predictions for raw inputs: label names, lists of label names, or values in original units."""
        decisions = self.head.predict(self.predict_outputs(inputs, batch_size))
        if self.task == "single_label_classification":
            return [self.label_names[i] for i in decisions.tolist()]
        if self.task == "multi_label_classification":
            return [[self.label_names[j] for j, on in enumerate(row) if on] for row in decisions.tolist()]
        return [row[0] if len(row) == 1 else row for row in decisions.tolist()]

    def predict_proba(self, inputs: Sequence[Any], batch_size: int = 32) -> torch.Tensor:
        """Class probabilities (softmax, or per-label sigmoid for multi-label). Shape: ``(n, labels)``."""
        if self.task == "regression":
            raise ValueError("predict_proba is for classification; this model does regression (use predict).")
        return self.head.scores(self.predict_outputs(inputs, batch_size))

    # --- persistence --------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {
            "mtransfer_format": FORMAT_VERSION,
            "adapter_type": self.adapter.adapter_type,
            "adapter": self.adapter.get_config(),
            "head": asdict(self.head.config),
            "task": self.task,
            "label_names": self.label_names,
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
    def from_pretrained(cls, folder: str | os.PathLike, **adapter_overrides: Any) -> TransferModel:
        """Load a folder written by :meth:`save_pretrained`.

        Args:
            folder: The model folder.
            **adapter_overrides: Passed to the adapter's ``from_pretrained`` (e.g. ``module=`` for
                a ``torch`` backbone whose class cannot be rebuilt by import).
        """
        import mtransfer.adapters  # noqa: F401

        folder = Path(folder).expanduser()
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{folder}: not an mtransfer model folder (no config.json).")
        config = json.loads(config_path.read_text())
        if "mtransfer_format" not in config:
            raise ValueError(f"{config_path}: not an mtransfer config (no 'mtransfer_format' key); "
                             "for a plain transformers model use TransferModel.from_backbone.")
        with quiet_transformers():
            adapter = get_adapter_class(config["adapter_type"]).from_pretrained(folder / "backbone", **{**config["adapter"], **adapter_overrides})
        model = cls(adapter, Head(HeadConfig(**config["head"])), config["label_names"])
        state = load_file(str(folder / "model.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("adapter.backbone.")]
        if missing or unexpected:
            raise ValueError(f"{folder / 'model.safetensors'}: weights do not match the config "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]}).")
        model.eval()
        return model

    def __repr__(self) -> str:
        a = self.adapter
        n_train = sum(p.numel() for p in self.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in self.parameters())
        return (f"TransferModel(adapter={a.adapter_type}:{getattr(a, 'model_name_or_path', '?')}, task={self.task}, "
                f"labels={self.label_names[:6]}{'...' if len(self.label_names) > 6 else ''}, "
                f"groups={[g.name for g in self.layer_groups()][:3]}..., params={n_all:,} ({n_train:,} trainable))")
