"""Image adapter for transformers vision backbones, timm models through TimmWrapper included.

Evaluation preprocessing is the model's own image processor (``AutoImageProcessor``), exactly
what ``transformers.pipeline`` runs, so exported models predict the same. Training adds
``torchvision.transforms.v2`` augmentation (random resized crop to the model's input size,
flips, colour jitter) with the processor's normalisation; it never runs at evaluation.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import torch
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoModel

from mtransfer.modalities import BUILTIN_MODALITIES
from mtransfer.adapters.base import Adapter, Features, LayerGroup, NativeForm, load_pretrained, register_adapter
from mtransfer.adapters.text import _block_list, encoder_layer_groups
from mtransfer.media import IMAGE_SUFFIXES, find_bad_inputs, load_image, media_fingerprint

POOLINGS = ("auto", "cls", "mean", "pooler")
# Architectures whose classifier reads the CLS token of the (normed) last hidden state.
CLS_MODEL_TYPES = ("vit", "deit", "vit_msn", "vit_mae", "vit_hybrid", "clip_vision_model", "siglip_vision_model")


@dataclass
class Augmentation:
    """Train-time image augmentation (``torchvision.transforms.v2``), applied before normalisation.

    Attributes:
        crop_scale: Area range of ``RandomResizedCrop`` (fraction of the image).
        crop_ratio: Aspect-ratio range of the crop.
        hflip: Probability of a horizontal flip.
        vflip: Probability of a vertical flip.
        color_jitter: Brightness, contrast and saturation jitter strength (0: off).
        rotation: Maximum rotation in degrees (0: off).
    """

    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter: float = 0.2
    rotation: float = 0.0

    def __post_init__(self) -> None:
        self.crop_scale = tuple(float(x) for x in self.crop_scale)
        self.crop_ratio = tuple(float(x) for x in self.crop_ratio)
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"augmentation crop_scale={self.crop_scale}: expected [low, high] with 0 < low <= high <= 1.")
        if len(self.crop_ratio) != 2 or not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"augmentation crop_ratio={self.crop_ratio}: expected [low, high] with 0 < low <= high.")
        for name in ("hflip", "vflip"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"augmentation {name}={getattr(self, name)}: expected a probability in [0, 1].")
        if not 0 <= self.color_jitter <= 1:
            raise ValueError(f"augmentation color_jitter={self.color_jitter}: expected a strength in [0, 1].")
        if not 0 <= self.rotation <= 180:
            raise ValueError(f"augmentation rotation={self.rotation}: expected degrees in [0, 180].")

    @classmethod
    def from_setting(cls, value: Any) -> Augmentation | None:
        """``None``/``False``: no augmentation; ``True``/``"default"``: the defaults; a dict: overrides."""
        if value is None or value is False or value == "none":
            return None
        if value is True or value == "default":
            return cls()
        if isinstance(value, Augmentation):
            return value
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"augmentation: unknown keys {unknown}; expected some of {sorted(known)}.")
            return cls(**value)
        raise ValueError(f"augmentation={value!r}: expected None, True, 'default' or a dict of {[f.name for f in fields(cls)]}.")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def transform(self, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> Any:
        """The training pipeline: PIL image -> normalised ``(3, H, W)`` float tensor."""
        from torchvision.transforms import v2

        steps: list[Any] = [v2.RandomResizedCrop(size, scale=self.crop_scale, ratio=self.crop_ratio, antialias=True)]
        if self.rotation:
            steps.append(v2.RandomRotation(self.rotation))
        if self.hflip:
            steps.append(v2.RandomHorizontalFlip(self.hflip))
        if self.vflip:
            steps.append(v2.RandomVerticalFlip(self.vflip))
        if self.color_jitter:
            j = self.color_jitter
            steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
        steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        return v2.Compose(steps)


def processor_geometry(processor: Any) -> tuple[tuple[int, int], list[float], list[float]]:
    """The input size ``(height, width)`` and normalisation an image processor produces."""
    config = getattr(processor, "data_config", None)
    if config is not None:  # timm through TimmWrapperImageProcessor
        _, h, w = config["input_size"]
        return (int(h), int(w)), list(config["mean"]), list(config["std"])
    size = processor.crop_size if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None) else processor.size
    size = dict(size) if size is not None else {}
    if "height" in size and "width" in size:
        hw = (int(size["height"]), int(size["width"]))
    elif "shortest_edge" in size:
        hw = (int(size["shortest_edge"]),) * 2
    else:
        raise ValueError(f"Cannot tell the input size of {type(processor).__name__} (size={size}).")
    if getattr(processor, "do_normalize", True):
        mean, std = list(processor.image_mean), list(processor.image_std)
    else:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return hw, mean, std


def _prefix_tokens(backbone: nn.Module) -> int:
    """Tokens before the patch tokens (CLS, distillation, registers) in a ViT-style sequence."""
    timm_model = getattr(backbone, "timm_model", None)
    if timm_model is not None:
        return int(getattr(timm_model, "num_prefix_tokens", 0))
    emb = getattr(backbone, "embeddings", None)
    n = 0
    for name in ("cls_token", "distillation_token"):
        if isinstance(getattr(emb, name, None), torch.Tensor):
            n += 1
    registers = getattr(emb, "register_tokens", None)
    if isinstance(registers, torch.Tensor):
        n += registers.shape[1]
    return n


def timm_layer_groups(timm_model: nn.Module) -> list[LayerGroup]:
    """timm's own parameter groups (``group_matcher``, as its layer-wise LR decay uses): stem, blocks, top."""
    from timm.models._manipulate import group_parameters

    named = dict(timm_model.named_parameters())
    grouped = group_parameters(timm_model, timm_model.group_matcher(coarse=False))
    ids = sorted(grouped)
    groups = []
    for k, gid in enumerate(ids):
        name = "stem" if k == 0 else ("top" if gid >= 99999 else f"layer.{k - 1}")
        groups.append(LayerGroup(name, params=[named[n] for n in grouped[gid]]))
    return groups


@register_adapter("image")
class ImageAdapter(Adapter):
    """A transformers vision backbone (ViT, DeiT, BEiT, DINOv2, Swin, ConvNeXt, ResNet,
    EfficientNet, MobileNet, ..., or ``timm/...`` through TimmWrapper) with its image processor.

    Layer groups, input side first: ``embeddings`` / ``stem`` (patch embedding or stem
    convolutions), one group per transformer block or CNN stage, and ``top`` (final norm) when
    it has parameters; timm models use timm's own ``group_matcher``.

    Args:
        model_name_or_path: Hub id or folder.
        pooling: ``auto`` (what the architecture's own classifier reads: the CLS token for
            ViT/DeiT, the pooler output for DINOv2, BEiT, Swin, CNNs and timm models, else the
            mean of patch tokens or the global average of the last feature map), ``cls``,
            ``mean`` or ``pooler``.
        augmentation: Train-time augmentation: None/False (none), True (defaults) or a dict of
            :class:`Augmentation` fields.
        pretrained: False builds the same architecture with random weights (a baseline).
        revision: Hub revision when loading by id.

    >>> adapter = ImageAdapter("google/vit-base-patch16-224-in21k")  # doctest: +SKIP
    >>> adapter.forward_features(adapter.preprocess(["cat.jpg"])).pooled.shape  # doctest: +SKIP
    torch.Size([1, 768])
    """

    pipeline_tag = "image-classification"
    media_suffixes = IMAGE_SUFFIXES
    default_input_column = BUILTIN_MODALITIES["image"][1]
    summary = BUILTIN_MODALITIES["image"][0]

    def __init__(self, model_name_or_path: str | os.PathLike, *, pooling: str = "auto", augmentation: Any = True,
                 pretrained: bool = True, revision: str | None = None) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"ImageAdapter pooling={pooling!r}; expected one of {', '.join(POOLINGS)}.")
        self.model_name_or_path = str(model_name_or_path)
        self.revision = revision
        kwargs = {"revision": revision} if revision else {}
        self.processor = load_pretrained(AutoImageProcessor.from_pretrained, model_name_or_path, "image processor", **kwargs)
        if pretrained:
            self.backbone = load_pretrained(AutoModel.from_pretrained, model_name_or_path, "vision model", **kwargs)
        else:
            config = load_pretrained(AutoConfig.from_pretrained, model_name_or_path, "model config", **kwargs)
            self.backbone = AutoModel.from_config(config)
        self.model_type = str(getattr(self.backbone.config, "model_type", ""))
        self.augmentation = Augmentation.from_setting(augmentation)
        self.size, self.mean, self.std = processor_geometry(self.processor)
        self._train_transform = self.augmentation.transform(self.size, self.mean, self.std) if self.augmentation else None
        self.num_prefix_tokens = _prefix_tokens(self.backbone)
        self.pooling = self._resolve_pooling(pooling)
        for p in self.unused_parameters():
            p.requires_grad_(False)
        with torch.no_grad():  # the feature size, from one dummy image through the real path
            was = self.backbone.training
            self.backbone.eval()
            probe = self._pool(self.backbone(pixel_values=torch.zeros(1, 3, *self.size)), None)
            self.backbone.train(was)
        self.embedding_dim = int(probe.shape[-1])

    def _resolve_pooling(self, pooling: str) -> str:
        has_pooler = self.model_type == "timm_wrapper" or self._pooler_module() is not None or self.model_type in (
            "dinov2", "dinov2_with_registers", "swin", "swinv2", "convnext", "convnextv2", "resnet", "regnet",
            "efficientnet", "mobilenet_v1", "mobilenet_v2", "beit", "data2vec-vision", "levit", "poolformer", "van")
        if pooling == "auto":
            if self.model_type in CLS_MODEL_TYPES:
                return "cls"
            return "pooler" if has_pooler else "mean"
        if pooling == "pooler" and not has_pooler:
            raise ValueError(f"ImageAdapter pooling='pooler' but {type(self.backbone).__name__} from "
                             f"{self.model_name_or_path!r} has no pooler output; use 'cls' or 'mean'.")
        if pooling == "cls" and self.num_prefix_tokens == 0:
            raise ValueError(f"ImageAdapter pooling='cls' but {type(self.backbone).__name__} has no CLS token; "
                             "use 'mean' or 'pooler'.")
        return pooling

    def _pooler_module(self) -> nn.Module | None:
        pooler = getattr(self.backbone, "pooler", None)
        return pooler if isinstance(pooler, nn.Module) and any(True for _ in pooler.parameters()) else None

    # --- contract -----------------------------------------------------------------------
    def find_bad_inputs(self, inputs: Sequence[Any]) -> list[tuple[int, str]]:
        return find_bad_inputs(inputs, load_image)

    def input_fingerprint(self, inputs: Sequence[Any]) -> str:
        return media_fingerprint(inputs)

    def preprocess(self, inputs: Sequence[Any], *, training: bool = False) -> dict[str, torch.Tensor]:
        images = [load_image(x) for x in inputs]
        if training and self._train_transform is not None:
            return {"pixel_values": torch.stack([self._train_transform(im) for im in images])}
        return {"pixel_values": self.processor(images=images, return_tensors="pt")["pixel_values"]}

    def _pool(self, out: Any, batch: Any) -> torch.Tensor:
        hidden = out.last_hidden_state
        if self.pooling == "pooler":
            pooled = out.pooler_output
            return pooled.flatten(1) if pooled.ndim > 2 else pooled
        if self.pooling == "cls":
            return hidden[:, 0]
        if hidden.ndim == 4:  # CNN feature map (batch, channels, h, w)
            return hidden.mean(dim=(2, 3))
        return hidden[:, self.num_prefix_tokens:].mean(1)

    def forward_features(self, batch: dict[str, torch.Tensor]) -> Features:
        out = self.backbone(pixel_values=batch["pixel_values"])
        pooled = self._pool(out, batch)
        hidden = out.last_hidden_state
        tokens = hidden.flatten(2).transpose(1, 2) if hidden.ndim == 4 else hidden
        return Features(pooled=pooled, tokens=tokens)

    def unused_parameters(self) -> list[nn.Parameter]:
        pooler = self._pooler_module()
        if pooler is not None and self.pooling != "pooler":
            return list(pooler.parameters())
        return []

    def layer_groups(self) -> list[LayerGroup]:
        timm_model = getattr(self.backbone, "timm_model", None)
        if timm_model is not None:
            return timm_layer_groups(timm_model)
        return encoder_layer_groups(self.backbone, self.unused_parameters())

    def blocks(self) -> nn.ModuleList | None:
        if getattr(self.backbone, "timm_model", None) is not None:
            return None
        return _block_list(self.backbone)[1]

    def random_below_blocks(self) -> str | None:
        return "training images are augmented" if self._train_transform is not None else None

    def feature_fingerprint(self) -> dict[str, Any]:
        processor = json.loads(self.processor.to_json_string()) if hasattr(self.processor, "to_json_string") else repr(self.processor)
        return {**super().feature_fingerprint(), "processor": processor}

    def transformers_form(self) -> NativeForm:
        from transformers import AutoModelForImageClassification

        sample = self.preprocess([torch.zeros(3, *self.size, dtype=torch.uint8) + 90,
                                  (torch.rand(3, *self.size) * 255).to(torch.uint8)])
        return NativeForm(AutoModelForImageClassification, self.processor, sample)

    def get_config(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "augmentation": self.augmentation.to_dict() if self.augmentation else None,
                "source": self.model_name_or_path}

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        self.backbone.save_pretrained(folder)
        if type(self.processor).__name__ != "TimmWrapperImageProcessor":  # timm's lives in the model's config.json
            self.processor.save_pretrained(folder)
