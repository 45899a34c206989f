"""EfficientDet (Tan, Pang & Le, CVPR 2020): an EfficientNet trunk, a BiFPN on its P3-P5, and one
class head and one box head shared across the levels (their separable convolutions are; their
BatchNorms are per level).

``EfficientDetNet`` is the network alone: images of exactly the configured size in, per-level
class logits (anchors x classes channels) and box codes (anchors x 4: ty, tx, th, tw, TF's order)
out — the same tensors as the reference port's (``effdet``'s ``EfficientDet``) for converted
weights. The detector that users train and run wraps it with anchors, the loss and decoding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from effnet.core.errors import UsageError
from effnet.models.backbone import backbone_config, config_from
from effnet.models.bifpn import BN_EPS, BN_MOMENTUM, BiFPN, SeparableConv
from effnet.models.config import ModelConfig
from effnet.models.efficientdet_specs import MIN_LEVEL, NUM_ANCHORS, DetScale, get_scale
from effnet.models.efficientnet import EfficientNet
from effnet.models.flops import module_macs
from effnet.models.layers import activation

OUT_INDICES = (2, 3, 4)  # the trunk's strides 8, 16, 32: P3, P4, P5
PRIOR = 0.01  # the class logits start at this probability (focal loss paper): background dominates


@dataclass(frozen=True)
class EfficientDetConfig:
    """Everything ``EfficientDetNet`` needs; it travels inside weights files."""

    name: str
    backbone: ModelConfig
    scale: DetScale
    num_classes: int = 90  # COCO's 90 category ids (80 used), as the released checkpoints
    score_thresh: float = 0.05  # detections below it are dropped (the reference keeps all 100)
    detections_per_image: int = 100

    def __post_init__(self):
        if not (isinstance(self.num_classes, int) and self.num_classes >= 1):
            raise UsageError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        if not (0.0 <= self.score_thresh < 1.0 and self.detections_per_image >= 1):
            raise UsageError(f"need 0 <= score_thresh < 1 and detections_per_image >= 1, got "
                             f"{self.score_thresh!r}, {self.detections_per_image!r}")  # fmt: skip

    @property
    def min_size(self) -> int:
        """The side images are letterboxed to (named as ``DetectorConfig``'s input size, which the
        detection task reads for either)."""
        return self.scale.image_size

    @property
    def levels(self) -> int:
        return self.scale.max_level - MIN_LEVEL + 1

    def to_dict(self) -> dict:
        return {"kind": "efficientdet", "name": self.name, "backbone": self.backbone.to_dict(),
                "scale": asdict(self.scale), "num_classes": self.num_classes, "score_thresh": self.score_thresh,
                "detections_per_image": self.detections_per_image}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> EfficientDetConfig:
        d = dict(d)
        if d.pop("kind", "efficientdet") != "efficientdet":
            raise UsageError("not an EfficientDet config")
        unknown = set(d) - {"name", "backbone", "scale", "num_classes", "score_thresh", "detections_per_image"}
        if unknown:
            raise UsageError(f"unknown EfficientDet config keys: {', '.join(sorted(unknown))}")
        return cls(**{**d, "backbone": config_from(d["backbone"]), "scale": DetScale(**d["scale"])})


def efficientdet_config(name: str | None = "efficientdet_d0", *, phi: float | None = None, num_classes: int = 90,
                        image_size: int | None = None, **backbone_overrides) -> EfficientDetConfig:  # fmt: skip
    """A released model by name (``efficientdet_d0``..``d7``, ``d7x``, ``efficientdet_lite0``..
    ``lite4``) or any ``phi`` by the paper's rule; ``image_size`` builds it for another input
    side. The trunk is TF's form of its EfficientNet (SAME padding, BN eps 1e-3), as every
    released detector was trained."""
    name, scale = get_scale(name if phi is None else None, phi, image_size)
    options = dict(padding="same", bn_eps=1e-3, drop_path_rate=0.0 if scale.backbone.endswith("lite0") else 0.2)
    options.update(backbone_overrides)
    if scale.backbone_phi is not None:
        trunk = backbone_config(None, phi=scale.backbone_phi, out_indices=OUT_INDICES, **options)
    else:
        trunk = backbone_config(scale.backbone, out_indices=OUT_INDICES, **options)
    return EfficientDetConfig(name, replace(trunk, resolution=scale.image_size), scale, num_classes)


class DetectionHead(nn.Module):
    """``repeats`` x (separable conv shared by all levels, BN of this level, activation), then a
    separable conv to ``NUM_ANCHORS x outputs`` channels."""

    def __init__(self, width: int, outputs: int, repeats: int, levels: int, act: str):
        super().__init__()
        self.convs = nn.ModuleList(SeparableConv(width, width, bias=True, norm=False) for _ in range(repeats))
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(width, BN_EPS, BN_MOMENTUM) for _ in range(repeats)) for _ in range(levels)
        )
        self.act = activation(act)
        self.predict = SeparableConv(width, NUM_ANCHORS * outputs, bias=True, norm=False)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for x, norms in zip(features, self.norms, strict=True):
            for conv, norm in zip(self.convs, norms, strict=True):
                x = self.act(norm(conv(x)))
            outputs.append(self.predict(x))
        return outputs


class EfficientDetNet(nn.Module):
    def __init__(self, config: EfficientDetConfig):
        super().__init__()
        self.config = config
        scale = config.scale
        self.trunk = EfficientNet(config.backbone)
        self.fpn = BiFPN(self.trunk.feature_channels, scale.image_size, scale.fpn_channels, scale.fpn_repeats,
                         max_level=scale.max_level, weighting=scale.weighting, act=scale.act,
                         padding="same")  # fmt: skip
        self.class_net = DetectionHead(scale.fpn_channels, config.num_classes, scale.head_repeats, config.levels,
                                       scale.act)  # fmt: skip
        self.box_net = DetectionHead(scale.fpn_channels, 4, scale.head_repeats, config.levels, scale.act)
        self._init_heads()

    def _init_heads(self) -> None:
        """The reference's start: BiFPN convolutions Glorot-uniform, head convolutions normal with
        std sqrt(1 / fan-in), biases zero, and the class logits' bias at the prior, so that the
        first focal losses are not swamped by the ~50,000 background anchors."""
        for module in self.fpn.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for head in (self.class_net, self.box_net):
            _init_head(head)
        self.init_class_output()

    def init_class_output(self) -> None:
        _init_head(self.class_net.predict)
        nn.init.constant_(self.class_net.predict.pw.bias, -math.log((1 - PRIOR) / PRIOR))

    def check_input(self, x: torch.Tensor) -> None:
        side = self.config.scale.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.config.backbone.in_chans, side, side):
            raise UsageError(f"{self.config.name} takes (N, {self.config.backbone.in_chans}, {side}, {side}) "
                             f"images (it is built for {side} px), got {tuple(x.shape)}")  # fmt: skip

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        self.check_input(x)
        features = self.fpn(self.trunk(x))
        return self.class_net(features), self.box_net(features)


def _init_head(module: nn.Module) -> None:
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            fan_in = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
            nn.init.normal_(conv.weight, 0.0, math.sqrt(1.0 / fan_in))
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)


def create_efficientdet_net(name: str | None = "efficientdet_d0", *, phi: float | None = None, num_classes: int = 90,
                            image_size: int | None = None) -> EfficientDetNet:  # fmt: skip
    return EfficientDetNet(efficientdet_config(name, phi=phi, num_classes=num_classes, image_size=image_size))


def efficientdet_summary(name: str) -> dict:
    """A released EfficientDet's row of ``effnet models --task detection``: its table entry,
    parameters (90 COCO classes) and multiply-accumulates at its own input size."""
    config = efficientdet_config(name)
    scale = config.scale
    with torch.device("meta"):
        net = EfficientDetNet(config).eval()
    return {"name": name, "backbone": scale.backbone, "image_size": scale.image_size,
            "fpn_channels": scale.fpn_channels, "fpn_repeats": scale.fpn_repeats, "head_repeats": scale.head_repeats,
            "weighting": scale.weighting,
            "anchor_scale": scale.anchor_scale, "levels": f"P3-P{scale.max_level}",
            "params": sum(p.numel() for p in net.parameters()),
            "macs": module_macs(net, (1, 3, scale.image_size, scale.image_size))}  # fmt: skip
