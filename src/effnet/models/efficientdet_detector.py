"""EfficientDet as a detector users train and run: images of any size in, torchvision's detection
API out (losses in training; ``[{"boxes", "labels", "scores"}]`` in eval, boxes (x1, y1, x2, y2)
in the input image's pixels, labels 1..num_classes), so that the detection task, eval, predict and
serve treat it as they treat the Faster R-CNN family.

Each image is letterboxed to the network's square input (scaled to fit, padded right and bottom
with the mean colour, as the reference does), so boxes map back by one scale per image.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from effnet.core.errors import UsageError
from effnet.models.anchors import anchor_boxes, decode_boxes, flatten_levels
from effnet.models.backbone import name_classes
from effnet.models.bifpn import SeparableConv
from effnet.models.efficientdet import EfficientDetConfig, EfficientDetNet, efficientdet_config
from effnet.models.efficientdet_loss import YXYX_TO_XYXY, LossSettings, detection_loss, label_anchors
from effnet.models.efficientdet_specs import ASPECT_RATIOS, MIN_LEVEL, NUM_ANCHORS, NUM_SCALES
from effnet.models.efficientnet import EfficientNet
from effnet.models.preprocessing import Preprocessing

TOPK = 5000  # candidates (anchor, class) kept before NMS, as the reference
NMS_IOU = 0.5


def select_detections(class_outputs: list[torch.Tensor], box_outputs: list[torch.Tensor], anchors: torch.Tensor, *,
                      score_thresh: float | torch.Tensor = 0.0, max_detections: int = 100,
                      clip: torch.Tensor | None = None,
                      padded: bool = False) -> list[dict[str, torch.Tensor]]:  # fmt: skip
    """Per image: the ``TOPK`` best (anchor, class) logits over all levels, their boxes decoded
    (and clipped to ``clip``'s (height, width) rows when given), per-class NMS at IoU 0.5, the
    best ``max_detections`` above ``score_thresh``. Labels are 1-based. Written with tensor ops
    only, so that the ONNX export traces it whole (NMS included).

    The threshold is applied before NMS, which changes nothing of what survives it (a box is only
    ever suppressed by a higher-scoring one) but spares NMS the thousands of background anchors
    (eager EfficientDet-Lite0 at 128 px with the threshold at 0.05: 28.6 ms without this filter,
    25.5 ms with it, in two runs of benchmarks/tasks/detection_latency.py).
    ``padded`` (the export's graph) never makes an empty tensor, which OpenVINO mishandles (it
    answers an empty selection with a row): NMS takes every candidate, the threshold zeroes the
    detections it drops, and each output has ``max_detections`` rows, zero-padded."""
    batch, num_classes = class_outputs[0].shape[0], class_outputs[0].shape[1] * 4 // box_outputs[0].shape[1]
    logits, deltas = flatten_levels(class_outputs, num_classes), flatten_levels(box_outputs, 4)
    _, flat = logits.reshape(batch, -1).topk(min(TOPK, logits.shape[1] * num_classes), dim=1)
    index, classes = flat // num_classes, flat % num_classes
    out = []
    for b in range(batch):
        boxes = decode_boxes(deltas[b, index[b]].float(), anchors[index[b]])
        if clip is not None:
            boxes = boxes.clamp(min=0).min(clip[b, [1, 0, 1, 0]].to(boxes.dtype))
        scores = logits[b, index[b], classes[b]].sigmoid().float()
        if padded:
            out.append(_padded(boxes, scores, classes[b], score_thresh, max_detections))
            continue
        above = scores > score_thresh
        boxes, scores, labels = boxes[above], scores[above], classes[b][above]
        keep = batched_nms(boxes, scores, labels, NMS_IOU)[:max_detections]
        out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep] + 1})
    return out


def _padded(boxes, scores, classes, score_thresh, rows: int) -> dict[str, torch.Tensor]:
    keep = batched_nms(boxes, scores, classes, NMS_IOU)[:rows]
    valid = scores[keep] > score_thresh
    found = {"boxes": boxes[keep] * valid[:, None], "scores": scores[keep] * valid,
             "labels": (classes[keep] + 1) * valid}  # fmt: skip
    return {k: torch.cat([v, torch.zeros((rows, *v.shape[1:]), dtype=v.dtype)])[:rows] for k, v in found.items()}


def letterbox(images: list[torch.Tensor], side: int, mean, std) -> tuple[torch.Tensor, list[float], torch.Tensor]:
    """The network's (N, 3, side, side) input for [0, 1] images of any size — each scaled to fit
    (bilinear, antialiased when shrinking), normalised, padded right and bottom with the mean
    colour (0 once normalised) — each image's scale, and each one's (height, width) inside the
    input. Eager and the ONNX export's runner both call this, so they see the same pixels."""
    device = images[0].device
    mean, std = torch.tensor(mean, device=device).view(3, 1, 1), torch.tensor(std, device=device).view(3, 1, 1)
    batch = torch.zeros(len(images), 3, side, side, device=device)
    scales, extents = [], []
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[0] != 3:
            raise UsageError(f"EfficientDet takes (3, H, W) RGB images, got {tuple(image.shape)}")
        h, w = image.shape[-2:]
        scale = min(side / h, side / w)
        nh, nw = min(side, int(h * scale)), min(side, int(w * scale))  # as the reference: floor
        resized = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", align_corners=False,
                                antialias=scale < 1)[0]  # fmt: skip
        batch[i, :, :nh, :nw] = (resized - mean) / std
        scales.append(scale)
        extents.append((nh, nw))
    return batch, scales, torch.tensor(extents, dtype=torch.float32, device=device)


class DetectionGraph(nn.Module):
    """What EfficientDet's ONNX export holds: one letterboxed image (1, 3, S, S), its (height,
    width) inside the input and the score threshold in; boxes (in the input's pixels), labels and
    scores out. The threshold is an input, so the one graph is checked at 0 and run at the
    model's own."""

    def __init__(self, detector: EfficientDet):
        super().__init__()
        self.net, self.config = detector.net, detector.config
        self.register_buffer("anchors", detector.anchors, persistent=False)

    def forward(self, image: torch.Tensor, extent: torch.Tensor, score_thresh: torch.Tensor):
        class_outputs, box_outputs = self.net(image)
        (found,) = select_detections(class_outputs, box_outputs, self.anchors, score_thresh=score_thresh,
                                     max_detections=self.config.detections_per_image, clip=extent[None],
                                     padded=True)  # fmt: skip
        return found["boxes"], found["labels"], found["scores"]


class EfficientDet(nn.Module):
    """``forward(images, targets=None)`` as torchvision's detectors: a list (or batch) of [0, 1]
    RGB images of any size; targets ``{"boxes": (x1, y1, x2, y2) pixels, "labels": 1..K}``."""

    task = "detection"

    def __init__(self, config: EfficientDetConfig, loss: LossSettings | None = None):
        super().__init__()
        self.config, self.loss = config, loss or LossSettings()
        # export and the task's threshold option set it on the model, as on torchvision's detectors
        self.score_thresh = config.score_thresh
        self.class_names: list[str] | None = None
        self.net = EfficientDetNet(config)
        scale = config.scale
        self.preprocessing = Preprocessing.for_model(config.backbone.family, scale.image_size)
        anchors = anchor_boxes(scale.image_size, min_level=MIN_LEVEL, max_level=scale.max_level,
                               anchor_scale=scale.anchor_scale, num_scales=NUM_SCALES,
                               aspect_ratios=ASPECT_RATIOS)  # fmt: skip
        self.register_buffer("anchors", anchors, persistent=False)  # a function of the config alone

    @property
    def trunk(self) -> EfficientNet:
        return self.net.trunk

    def letterbox(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[float], torch.Tensor]:
        return letterbox(images, self.config.scale.image_size, self.preprocessing.mean, self.preprocessing.std)

    def forward(self, images, targets=None):
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            images = list(images)
        batch, scales, extents = self.letterbox(images)
        class_outputs, box_outputs = self.net(batch)
        if self.training:
            if targets is None:
                raise UsageError("EfficientDet needs targets in training mode")
            labelled = [label_anchors(self.anchors, t["boxes"].float()[:, YXYX_TO_XYXY] * s, t["labels"],
                                      self.loss.match_iou) for t, s in zip(targets, scales, strict=True)]  # fmt: skip
            classes, codes, positives = (torch.stack(parts) for parts in zip(*labelled, strict=True))
            return detection_loss(class_outputs, box_outputs, classes, codes, positives, self.loss)
        found = select_detections(class_outputs, box_outputs, self.anchors, score_thresh=self.score_thresh,
                                  max_detections=self.config.detections_per_image, clip=extents)  # fmt: skip
        for result, scale in zip(found, scales, strict=True):
            result["boxes"] = result["boxes"] / scale
        return found

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def reset_classes(self, num_classes: int, class_names: list[str] | None = None) -> EfficientDet:
        """A fresh class output layer for ``num_classes`` (everything else kept): fine-tuning a
        COCO detector on other classes, as timm's ``reset_classifier`` does for a classifier."""
        self.config = replace(self.config, num_classes=num_classes)
        self.net.config = self.config
        self.net.class_net.predict = SeparableConv(self.config.scale.fpn_channels, NUM_ANCHORS * num_classes,
                                                   bias=True, norm=False)  # fmt: skip
        self.net.init_class_output()
        return name_classes(self, class_names, num_classes, "a detector")


def create_efficientdet(name: str | None = "efficientdet_d0", *, phi: float | None = None, num_classes: int = 90,
                        image_size: int | None = None, anchor_scale: float | None = None,
                        class_names: list[str] | None = None, **backbone_overrides) -> EfficientDet:  # fmt: skip
    """A released EfficientDet by name or any ``phi``, for ``num_classes`` object classes;
    ``anchor_scale`` sizes the anchors for the data's objects (side = scale x the level's stride)."""
    config = efficientdet_config(name, phi=phi, num_classes=num_classes, image_size=image_size, **backbone_overrides)
    if anchor_scale is not None:
        config = replace(config, scale=replace(config.scale, anchor_scale=float(anchor_scale)))
    return build_efficientdet(config, class_names)


def build_efficientdet(config: EfficientDetConfig, class_names: list[str] | None = None) -> EfficientDet:
    return name_classes(EfficientDet(config), class_names, config.num_classes, "a detector")
