"""Object detectors on an EfficientNet trunk: torchvision's Faster R-CNN, FCOS and RetinaNet
heads on an FPN whose inputs are the trunk's ``feature_info`` levels.

Three things torchvision's defaults get wrong for small images, set here from the data instead:
``min_size``/``max_size`` (torchvision resizes every image to 800 px, 40x the work for a 128 px
canvas), the anchor sizes (32-512 px by default, larger than whole canvases) and the FPN width
(256 channels is sized for ResNet-50 at 800 px).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

from effnet.core.errors import UsageError
from effnet.models.backbone import backbone_config, config_from, name_classes
from effnet.models.config import ModelConfig
from effnet.models.efficientnet import EfficientNet
from effnet.models.preprocessing import Preprocessing

HEADS = ("faster_rcnn", "fcos", "retinanet")
# Strides 8, 16, 32 from the trunk; the FPN adds one (Faster R-CNN: max-pool) or two (P6, P7).
OUT_INDICES = (2, 3, 4)
ASPECT_RATIOS = (0.5, 1.0, 2.0)
OCTAVES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))  # RetinaNet's three scales per level
# Faster R-CNN sized for a few objects per small image: torchvision's 2,000 proposals, 512 sampled
# RoIs and a 1024-wide box head (3.3 GFLOPs per image at 64 FPN channels, 25x the B0 trunk at
# 128 px) are sized for COCO at 800 px.
RCNN_SETTINGS = dict(
    rpn_pre_nms_top_n_train=600,
    rpn_post_nms_top_n_train=300,
    rpn_pre_nms_top_n_test=300,
    rpn_post_nms_top_n_test=150,
    box_batch_size_per_image=128,
)
BOX_HEAD_WIDTH = 256


def num_levels(head: str) -> int:
    return len(OUT_INDICES) + (1 if head == "faster_rcnn" else 2)


def level_strides(head: str) -> tuple[int, ...]:
    return tuple(2 ** (i + 1) for i in OUT_INDICES) + tuple(2 ** (OUT_INDICES[-1] + 2 + k) for k in
                                                               range(num_levels(head) - len(OUT_INDICES)))  # fmt: skip


def anchor_sizes_for(head: str, box_sides: list[float] | None, image_size: int) -> tuple[float, ...]:
    """One anchor size per FPN level, spread geometrically over the data's object sizes (5th to
    95th percentile of sqrt(box area)); FCOS takes the strides, which its level assignment needs."""
    n = num_levels(head)
    if head == "fcos":
        return tuple(float(s) for s in level_strides(head))
    if box_sides:
        ordered = sorted(box_sides)
        low = ordered[int(0.05 * (len(ordered) - 1))]
        high = ordered[int(0.95 * (len(ordered) - 1))]
    else:
        low, high = image_size / 8, image_size / 2
    low, high = max(4.0, low), max(low * 1.5, high)
    return tuple(round(low * (high / low) ** (i / (n - 1)), 1) for i in range(n))


@dataclass(frozen=True)
class DetectorConfig:
    backbone: ModelConfig
    head: str = "faster_rcnn"
    num_classes: int = 10  # object classes; the background is added inside
    min_size: int = 128  # torchvision's resize: short side to min_size, long side at most max_size
    max_size: int = 128
    anchor_sizes: tuple[float, ...] = field(default=())  # per level; () = from the image size
    fpn_channels: int = 64
    score_thresh: float = 0.05
    detections_per_image: int = 100

    def __post_init__(self):
        object.__setattr__(self, "backbone", config_from(self.backbone))
        if self.head not in HEADS:
            raise UsageError(f"detector head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if not (isinstance(self.num_classes, int) and self.num_classes >= 1):
            raise UsageError(f"a detector needs at least one object class, got {self.num_classes!r}")
        if not (32 <= self.min_size <= self.max_size <= 4096):
            raise UsageError(f"need 32 <= min_size <= max_size <= 4096, got {self.min_size}, {self.max_size}")
        sizes = tuple(float(s) for s in self.anchor_sizes) or anchor_sizes_for(self.head, None, self.min_size)
        if len(sizes) != num_levels(self.head) or not all(math.isfinite(s) and s > 0 for s in sizes):
            raise UsageError(f"{self.head} needs {num_levels(self.head)} positive anchor sizes, got {sizes}")
        object.__setattr__(self, "anchor_sizes", sizes)

    @property
    def name(self) -> str:
        return f"{self.head}_{self.backbone.name}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["backbone"] = self.backbone.to_dict()
        d["anchor_sizes"] = list(self.anchor_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DetectorConfig:
        return cls(**{**d, "anchor_sizes": tuple(d.get("anchor_sizes", ()))})


class TrunkWithFPN(nn.Module):
    """The trunk's levels through an FPN, as the OrderedDict torchvision's heads expect."""

    def __init__(self, config: ModelConfig, channels: int, extra: str):
        super().__init__()
        self.body = EfficientNet(config)
        extra_block = LastLevelMaxPool() if extra == "pool" else LastLevelP6P7(channels, channels)
        self.fpn = FeaturePyramidNetwork(self.body.feature_channels, channels, extra_blocks=extra_block)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict:
        levels = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(levels)))


class Detector(nn.Module):
    """``forward(images, targets=None)`` as torchvision's detectors: a list (or batch) of [0, 1]
    RGB images; losses in training, ``[{"boxes", "labels", "scores"}]`` in eval mode. Labels are
    1..num_classes (0 is the background)."""

    task = "detection"

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = config
        self.class_names: list[str] | None = None
        trunk = config.backbone
        self.preprocessing = Preprocessing.for_model(trunk.family, config.min_size)
        common = dict(
            min_size=config.min_size,
            max_size=config.max_size,
            image_mean=list(self.preprocessing.mean),
            image_std=list(self.preprocessing.std),
        )
        classes = config.num_classes + 1
        sizes = config.anchor_sizes
        if config.head == "faster_rcnn":
            backbone = TrunkWithFPN(trunk, config.fpn_channels, "pool")
            anchors = AnchorGenerator(tuple((s,) for s in sizes), (ASPECT_RATIOS,) * len(sizes))
            roi_pool = MultiScaleRoIAlign([str(i) for i in range(len(OUT_INDICES))], output_size=7, sampling_ratio=2)
            box_head = TwoMLPHead(config.fpn_channels * 7 * 7, BOX_HEAD_WIDTH)
            self.net = FasterRCNN(backbone, None, rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
                                  box_head=box_head, box_predictor=FastRCNNPredictor(BOX_HEAD_WIDTH, classes),
                                  box_score_thresh=config.score_thresh,
                                  box_detections_per_img=config.detections_per_image, **RCNN_SETTINGS,
                                  **common)  # fmt: skip
        elif config.head == "fcos":
            backbone = TrunkWithFPN(trunk, config.fpn_channels, "p6p7")
            anchors = AnchorGenerator(tuple((s,) for s in sizes), ((1.0,),) * len(sizes))
            self.net = FCOS(backbone, classes, anchor_generator=anchors, score_thresh=config.score_thresh,
                            detections_per_img=config.detections_per_image, **common)  # fmt: skip
        else:
            backbone = TrunkWithFPN(trunk, config.fpn_channels, "p6p7")
            anchors = AnchorGenerator(tuple(tuple(s * o for o in OCTAVES) for s in sizes),
                                      (ASPECT_RATIOS,) * len(sizes))  # fmt: skip
            self.net = RetinaNet(backbone, classes, anchor_generator=anchors, score_thresh=config.score_thresh,
                                 detections_per_img=config.detections_per_image, **common)  # fmt: skip

    @property
    def trunk(self) -> EfficientNet:
        return self.net.backbone.body

    def forward(self, images, targets=None):
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            images = list(images)
        return self.net(images, targets)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def create_detector(
    backbone: str | ModelConfig | None = "efficientnet_b0",
    *,
    phi: float | None = None,
    head: str = "faster_rcnn",
    num_classes: int = 10,
    image_size: int = 128,
    max_size: int | None = None,
    anchor_sizes: tuple[float, ...] = (),
    fpn_channels: int = 64,
    class_names: list[str] | None = None,
    **backbone_overrides,
) -> Detector:
    """A detector on any EfficientNet (name, ``phi`` or config): ``head`` is faster_rcnn, fcos or
    retinanet, ``image_size`` the images' short side (they are not resized beyond it)."""
    trunk = backbone_config(backbone, phi=phi, out_indices=OUT_INDICES, **backbone_overrides)
    config = DetectorConfig(trunk, head, num_classes, image_size, max_size or image_size, tuple(anchor_sizes),
                            fpn_channels)  # fmt: skip
    return build_detector(config, class_names)


def build_detector(config: DetectorConfig, class_names: list[str] | None = None) -> Detector:
    return name_classes(Detector(config), class_names, config.num_classes, "a detector")
