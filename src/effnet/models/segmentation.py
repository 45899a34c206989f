"""Semantic segmentation: a U-Net decoder on an EfficientNet trunk.

The decoder walks the trunk's ``feature_info`` levels from stride 32 up to stride 2, each step
upsampling x2, concatenating the skip at that stride and applying two 3x3 conv-BN-ReLU, then one
more upsampling to full resolution (the layout of segmentation_models_pytorch's U-Net). Inputs
whose sides are not multiples of 32 are padded inside ``forward`` and the logits cropped back, so
any image size works and the output always matches the input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effnet.core.errors import UsageError
from effnet.models.backbone import backbone_config, config_from, name_classes
from effnet.models.config import ModelConfig
from effnet.models.efficientnet import EfficientNet
from effnet.models.preprocessing import Preprocessing

OUT_INDICES = (0, 1, 2, 3, 4)  # strides 2..32
STRIDE = 32


@dataclass(frozen=True)
class SegmenterConfig:
    backbone: ModelConfig
    num_classes: int = 2  # including the background, class 0
    decoder_channels: tuple[int, ...] = (128, 64, 48, 32, 16)  # one per upsampling, deepest first
    image_size: int = 128

    def __post_init__(self):
        object.__setattr__(self, "backbone", config_from(self.backbone))
        object.__setattr__(self, "decoder_channels", tuple(self.decoder_channels))
        if tuple(self.backbone.out_indices) != OUT_INDICES:
            raise UsageError(f"a U-Net needs trunk levels {OUT_INDICES}, got {self.backbone.out_indices}")
        if not (isinstance(self.num_classes, int) and self.num_classes >= 2):
            raise UsageError(f"segmentation needs at least 2 classes (background + one), got {self.num_classes!r}")
        if len(self.decoder_channels) != len(OUT_INDICES) or min(self.decoder_channels) < 1:
            raise UsageError(f"decoder_channels needs {len(OUT_INDICES)} positive widths, got {self.decoder_channels}")

    @property
    def name(self) -> str:
        return f"unet_{self.backbone.name}"

    def to_dict(self) -> dict:
        return {**asdict(self), "backbone": self.backbone.to_dict(), "decoder_channels": list(self.decoder_channels)}

    @classmethod
    def from_dict(cls, d: dict) -> SegmenterConfig:
        return cls(**d)


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """x2 upsampling, concatenation with the skip of that stride (if any), two 3x3 convs."""

    def __init__(self, cin: int, skip: int, cout: int):
        super().__init__()
        self.conv1 = conv_bn_relu(cin + skip, cout)
        self.conv2 = conv_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class Segmenter(nn.Module):
    """``forward(images)`` -> per-pixel class logits (N, num_classes, H, W) at the input's size."""

    task = "segmentation"

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        self.config = config
        self.class_names: list[str] | None = None
        self.preprocessing = Preprocessing.for_model(config.backbone.family, config.image_size)
        self.preprocessing = Preprocessing(config.image_size, config.image_size, "bilinear", self.preprocessing.mean,
                                           self.preprocessing.std)  # fmt: skip
        self.encoder = EfficientNet(config.backbone)
        skips = self.encoder.feature_channels[:-1][::-1] + [0]  # stride 16, 8, 4, 2, then none (full size)
        widths = [self.encoder.feature_channels[-1], *config.decoder_channels]
        self.decoder = nn.ModuleList(
            DecoderBlock(widths[i], skips[i], widths[i + 1]) for i in range(len(config.decoder_channels))
        )
        self.head = nn.Conv2d(widths[-1], config.num_classes, 3, padding=1)

    @property
    def trunk(self) -> EfficientNet:
        return self.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % STRIDE, (-width) % STRIDE
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        levels = self.encoder(x)
        y = levels[-1]
        for block, skip in zip(self.decoder, [*levels[:-1][::-1], None], strict=True):
            y = block(y, skip)
        return self.head(y)[..., :height, :width]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def create_segmenter(
    backbone: str | ModelConfig | None = "efficientnet_b0",
    *,
    phi: float | None = None,
    num_classes: int = 2,
    image_size: int = 128,
    decoder_channels: tuple[int, ...] = (128, 64, 48, 32, 16),
    class_names: list[str] | None = None,
    **backbone_overrides,
) -> Segmenter:
    """A U-Net on any EfficientNet (name, ``phi`` or config); ``num_classes`` includes background."""
    trunk = backbone_config(backbone, phi=phi, out_indices=OUT_INDICES, **backbone_overrides)
    return build_segmenter(SegmenterConfig(trunk, num_classes, tuple(decoder_channels), image_size), class_names)


def build_segmenter(config: SegmenterConfig, class_names: list[str] | None = None) -> Segmenter:
    return name_classes(Segmenter(config), class_names, config.num_classes, "a segmenter")
