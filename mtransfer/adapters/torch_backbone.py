"""Adapter for plain PyTorch image backbones: the user's own ``nn.Module`` or a shipped architecture.

The module maps a batch of normalised images ``(batch, 3, H, W)`` to features. Models with
timm's seam (``forward_features`` + ``forward_head(pre_logits=True)``) are read through it, so
their classifier is left out; otherwise the module's output is used: ``(batch, dim)`` as is,
feature maps ``(batch, C, h, w)`` averaged over space, token sequences averaged over tokens.

A saved adapter is ``torch_backbone.json`` (how to rebuild the module: a shipped name or an
import path, and its keyword arguments) plus ``model.safetensors`` (its state dict).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import save_file
from torch import nn

from mtransfer.modalities import BUILTIN_MODALITIES
from mtransfer.adapters.base import Adapter, Features, LayerGroup, register_adapter
from mtransfer.adapters.image import Augmentation
from mtransfer.media import IMAGE_SUFFIXES, find_bad_inputs, load_image, media_fingerprint
from mtransfer.weight_files import load_safetensors

SPEC_FILE = "torch_backbone.json"
WEIGHTS_FILE = "model.safetensors"


def _import_callable(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"torch backbone {path!r}: expected a shipped name or an import path 'package.module:callable'.")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"torch backbone {path!r}: cannot import module {module_name!r} ({err}).") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"torch backbone {path!r}: module {module_name!r} has no attribute {attr!r}.")
        obj = getattr(obj, part)
    return obj


def _read_spec(path: Path) -> tuple[str, dict[str, Any]]:
    """``(factory, factory_kwargs)`` from a ``torch_backbone.json``, or a one-line error naming it."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        factory, kwargs = saved["factory"], dict(saved.get("factory_kwargs") or {})
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: not a torch backbone spec (expected JSON with 'factory'; {type(err).__name__}: {err}).") from None
    if not isinstance(factory, str):
        raise ValueError(f"{path}: 'factory' must be a string, got {type(factory).__name__}.")
    return factory, kwargs


def _build(factory: str, kwargs: dict[str, Any], pretrained: bool) -> nn.Module:
    from mtransfer.backbones import BACKBONES

    fn = BACKBONES[factory].factory if factory in BACKBONES else _import_callable(factory)
    params = inspect.signature(fn).parameters
    call = dict(kwargs)
    if "pretrained" in params:
        call["pretrained"] = pretrained
    module = fn(**call)
    if not isinstance(module, nn.Module):
        raise TypeError(f"torch backbone {factory!r} returned {type(module).__name__}, not an nn.Module.")
    return module


def _n_params(module: nn.Module, skip: set[int]) -> int:
    return sum(p.numel() for p in module.parameters() if id(p) not in skip)


def child_layer_groups(module: nn.Module, skip: Sequence[nn.Parameter] = ()) -> list[LayerGroup]:
    """Layer groups from a module's children, input side first (registration order).

    A child holding most of the parameters that is a ``Sequential`` / ``ModuleList`` (a stack of
    blocks) is split into its own children; parameters registered directly on the module form
    a leading ``params`` group. A child named ``head`` (the name mtransfer reserves for the task
    head) makes the group ``backbone_head``.
    """
    skipped = {id(p) for p in skip}
    total = _n_params(module, skipped) or 1
    groups: list[LayerGroup] = []
    own = [p for p in module.parameters(recurse=False) if id(p) not in skipped]
    if own:
        groups.append(LayerGroup("params", params=own))
    for name, child in module.named_children():
        size = _n_params(child, skipped)
        if size == 0:
            continue
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and size > total / 2 and len(child) > 1:
            for sub_name, sub in child.named_children():
                if _n_params(sub, skipped):
                    groups.append(LayerGroup(f"{name}.{sub_name}", params=[p for p in sub.parameters() if id(p) not in skipped]))
        else:  # "head" is the task head's group: a backbone child of that name becomes "backbone_head"
            label = "backbone_head" if name == "head" else name
            groups.append(LayerGroup(label, params=[p for p in child.parameters() if id(p) not in skipped]))
    return groups


@register_adapter("torch")
class TorchBackboneAdapter(Adapter):
    """Any ``nn.Module`` image backbone, with torchvision preprocessing.

    Args:
        model_name_or_path: A shipped architecture (``"efficientnet_lite0"``), an import path
            ``"package.module:callable"`` returning the module, a folder written by
            :meth:`save_pretrained`, or an ``nn.Module`` instance.
        factory_kwargs: Keyword arguments for the callable.
        module: With a saved folder: the module instance to load the weights into (for
            user-defined classes that cannot be rebuilt by import).
        image_size: Square input size; default from the shipped architecture, else 224.
        mean, std: Normalisation; default ImageNet's (or the shipped architecture's).
        crop_pct: Evaluation resizes the short side to ``image_size / crop_pct`` and
            centre-crops ``image_size``.
        augmentation: Train-time augmentation (see :class:`~mtransfer.adapters.image.Augmentation`).
        layer_groups: Optional ``{group name: [module names]}``, input side first; default: the
            module's own ``layer_groups()``, timm's ``group_matcher``, else its children.
        pretrained: Passed to the callable when it takes ``pretrained`` (False: random init).
        trust_remote_code: Opening a saved folder whose ``torch_backbone.json`` names an import path
            (not a shipped architecture) imports and calls that code only when this is True;
            otherwise pass the module instance (``module=``) or set it after checking the folder.

    >>> adapter = TorchBackboneAdapter("efficientnet_lite0")  # doctest: +SKIP
    >>> adapter.embedding_dim  # doctest: +SKIP
    1280
    """

    pipeline_tag = "image-classification"
    media_suffixes = IMAGE_SUFFIXES
    default_input_column = BUILTIN_MODALITIES["torch"][1]
    summary = BUILTIN_MODALITIES["torch"][0]

    def __init__(self, model_name_or_path: str | os.PathLike | nn.Module, *, factory_kwargs: dict[str, Any] | None = None,
                 module: nn.Module | None = None, image_size: int | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, crop_pct: float = 0.875, augmentation: Any = True,
                 layer_groups: dict[str, list[str]] | None = None, pretrained: bool = True,
                 trust_remote_code: bool = False) -> None:
        super().__init__()
        from mtransfer.backbones import BACKBONES

        self.factory_kwargs = dict(factory_kwargs or {})
        spec = None
        saved_weights: Path | None = None
        if isinstance(model_name_or_path, nn.Module):
            backbone = model_name_or_path
            cls = type(backbone)
            self.factory = f"{cls.__module__}:{cls.__qualname__}"
            self.model_name_or_path = self.factory
        else:
            text = str(model_name_or_path)
            path = Path(text).expanduser()
            if (path / SPEC_FILE).is_file():
                self.factory, self.factory_kwargs = _read_spec(path / SPEC_FILE)
                saved_weights = path / WEIGHTS_FILE
                if not saved_weights.is_file():
                    raise FileNotFoundError(f"{path}: {SPEC_FILE} is there but {WEIGHTS_FILE} is missing.")
                if module is None and self.factory not in BACKBONES and not trust_remote_code:
                    raise ValueError(
                        f"{path / SPEC_FILE} names the code {self.factory!r} to build the backbone; opening a folder "
                        "imports and runs nothing unless you trust it: pass trust_remote_code=True "
                        "(--trust-remote-code) to import and call it, or the module instance (module=...).")
                backbone = module if module is not None else self._rebuild(path)
            elif path.is_dir():
                raise FileNotFoundError(f"{path}: not a saved torch backbone (no {SPEC_FILE}); pass a shipped name "
                                        f"({', '.join(BACKBONES)}) or 'package.module:callable'.")
            elif text in BACKBONES or ":" in text:
                self.factory = text
                backbone = _build(text, self.factory_kwargs, pretrained)
            else:
                raise ValueError(f"torch backbone {text!r}: not a shipped architecture ({', '.join(BACKBONES)}), an "
                                 "import path 'package.module:callable' or a folder saved by mtransfer.")
            self.model_name_or_path = text
            spec = BACKBONES.get(self.factory)
        self.backbone = backbone
        if saved_weights is not None:
            state = load_safetensors(saved_weights)
            missing, unexpected = self.backbone.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(f"{saved_weights}: weights do not match {type(self.backbone).__name__} "
                                 f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}).")
        self.image_size = int(image_size or (spec.image_size if spec else 224))
        self.mean = [float(x) for x in (mean or (spec.mean if spec else (0.485, 0.456, 0.406)))]
        self.std = [float(x) for x in (std or (spec.std if spec else (0.229, 0.224, 0.225)))]
        if not 0 < crop_pct <= 1:
            raise ValueError(f"TorchBackboneAdapter crop_pct={crop_pct}: expected a fraction in (0, 1].")
        self.crop_pct = float(crop_pct)
        self.augmentation = Augmentation.from_setting(augmentation)
        self.group_spec = {k: list(v) for k, v in layer_groups.items()} if layer_groups else None
        self._timm_seam = hasattr(self.backbone, "forward_features") and hasattr(self.backbone, "forward_head")
        self._eval_transform = self._make_eval_transform()
        size = (self.image_size, self.image_size)
        self._train_transform = self.augmentation.transform(size, self.mean, self.std) if self.augmentation else None
        for p in self.unused_parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            was = self.backbone.training
            self.backbone.eval()
            try:
                probe = self._features(torch.zeros(1, 3, *size))[0]
            except Exception as err:
                raise ValueError(f"torch backbone {self.model_name_or_path!r} fails on a (1, 3, {self.image_size}, "
                                 f"{self.image_size}) image batch: {err}") from err
            self.backbone.train(was)
        self.embedding_dim = int(probe.shape[-1])
        if self.group_spec:
            self.layer_groups()  # check the names now

    def _rebuild(self, folder: Path) -> nn.Module:
        try:
            return _build(self.factory, self.factory_kwargs, pretrained=False)
        except Exception as err:
            raise ValueError(f"{folder}: cannot rebuild the backbone {self.factory!r} ({err}); pass the module "
                             "instance (module=...) to load the saved weights into it.") from err

    def _make_eval_transform(self) -> Any:
        from torchvision.transforms import v2

        resize = int(round(self.image_size / self.crop_pct))
        return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(self.image_size), v2.ToImage(),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)])

    # --- contract -----------------------------------------------------------------------
    def find_bad_inputs(self, inputs: Sequence[Any]) -> list[tuple[int, str]]:
        return find_bad_inputs(inputs, load_image)

    def input_fingerprint(self, inputs: Sequence[Any]) -> str:
        return media_fingerprint(inputs)

    def preprocess(self, inputs: Sequence[Any], *, training: bool = False) -> dict[str, torch.Tensor]:
        transform = self._train_transform if training and self._train_transform is not None else self._eval_transform
        return {"pixel_values": torch.stack([transform(load_image(x)) for x in inputs])}

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._timm_seam:
            fmap = self.backbone.forward_features(x)
            pooled = self.backbone.forward_head(fmap, pre_logits=True)
        else:
            fmap = self.backbone(x)
            if isinstance(fmap, (tuple, list)):
                fmap = fmap[0]
            elif isinstance(fmap, dict):
                fmap = fmap.get("pooler_output", next(iter(fmap.values())))
            pooled = fmap
        if not isinstance(pooled, torch.Tensor):
            raise TypeError(f"the backbone returned {type(pooled).__name__}; expected a tensor")
        if pooled.ndim == 4:
            pooled = pooled.mean(dim=(2, 3))
        elif pooled.ndim == 3:
            pooled = pooled.mean(1)
        elif pooled.ndim != 2:
            raise ValueError(f"the backbone returned shape {tuple(pooled.shape)}; expected (batch, dim), "
                             "(batch, C, h, w) or (batch, tokens, dim)")
        tokens = None
        if isinstance(fmap, torch.Tensor) and fmap.ndim == 4:
            tokens = fmap.flatten(2).transpose(1, 2)
        elif isinstance(fmap, torch.Tensor) and fmap.ndim == 3:
            tokens = fmap
        return pooled, tokens

    def forward_features(self, batch: dict[str, torch.Tensor]) -> Features:
        pooled, tokens = self._features(batch["pixel_values"])
        return Features(pooled=pooled, tokens=tokens)

    def unused_parameters(self) -> list[nn.Parameter]:
        if self._timm_seam and hasattr(self.backbone, "get_classifier"):
            classifier = self.backbone.get_classifier()
            if isinstance(classifier, nn.Module):
                return list(classifier.parameters())
        return []

    def layer_groups(self) -> list[LayerGroup]:
        unused = self.unused_parameters()
        skip = {id(p) for p in unused}
        if self.group_spec:
            modules = dict(self.backbone.named_modules())
            groups = []
            for name, module_names in self.group_spec.items():
                missing = [m for m in module_names if m not in modules]
                if missing:
                    raise ValueError(f"TorchBackboneAdapter layer_groups[{name!r}]: no modules {missing} in "
                                     f"{type(self.backbone).__name__}; it has e.g. {[n for n, _ in self.backbone.named_children()][:10]}.")
                groups.append(LayerGroup(name, params=[p for m in module_names for p in modules[m].parameters() if id(p) not in skip]))
            return groups
        own = getattr(self.backbone, "layer_groups", None)
        if callable(own):
            return [LayerGroup(name, modules=list(mods)) for name, mods in own()]
        if hasattr(self.backbone, "group_matcher"):
            from mtransfer.adapters.image import timm_layer_groups

            return [LayerGroup(g.name, params=[p for p in g.params if id(p) not in skip]) for g in timm_layer_groups(self.backbone)]
        return child_layer_groups(self.backbone, unused)

    def get_config(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": self.mean, "std": self.std, "crop_pct": self.crop_pct,
                "augmentation": self.augmentation.to_dict() if self.augmentation else None,
                "layer_groups": self.group_spec, "source": self.model_name_or_path}

    def feature_fingerprint(self) -> dict[str, Any]:
        return {**super().feature_fingerprint(), "factory": self.factory, "factory_kwargs": self.factory_kwargs}

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SPEC_FILE).write_text(json.dumps({"factory": self.factory, "factory_kwargs": self.factory_kwargs}, indent=2))
        state = {k: v.detach().contiguous().cpu().clone() for k, v in self.backbone.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
