"""EfficientDet's training targets and loss (RetinaNet's, as the TF reference computes them).

Each anchor takes the ground-truth box it overlaps most if that IoU is at least 0.5, else
background; then every ground-truth box claims its best anchor whatever the IoU (small objects
would otherwise have none). The class loss is the focal loss (alpha 0.25, gamma 1.5) summed over
all anchors and classes, the box loss a Huber loss (delta 0.1) on the matched anchors' codes,
both divided by the number of matched anchors plus one; total = class + 50 x box.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, sigmoid_focal_loss

from effnet.models.anchors import encode_boxes, flatten_levels
from effnet.models.efficientdet_specs import NUM_ANCHORS

YXYX_TO_XYXY = [1, 0, 3, 2]


@dataclass(frozen=True)
class LossSettings:
    alpha: float = 0.25
    gamma: float = 1.5  # the reference's, not the focal loss paper's 2
    delta: float = 0.1  # Huber's switch from quadratic to linear, in box-code units
    box_weight: float = 50.0
    match_iou: float = 0.5


def label_anchors(anchors: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, match_iou: float = 0.5):
    """(class target per anchor: 0-based class or -1 for background, box codes per anchor (zero
    where unmatched), number of matched anchors) for one image's (y1, x1, y2, x2) ``boxes`` and
    1-based ``labels``."""
    if len(boxes) == 0:
        matches = torch.full((len(anchors),), -1, dtype=torch.long, device=anchors.device)
    else:
        iou = box_iou(boxes[:, YXYX_TO_XYXY], anchors[:, YXYX_TO_XYXY])  # (boxes, anchors)
        best_iou, matches = iou.max(0)
        matches = torch.where(best_iou < match_iou, torch.full_like(matches, -1), matches)
        # every box claims its best anchor; where two claim the same one, the first box keeps it
        claims = F.one_hot(iou.argmax(1), len(anchors)).bool()
        claimed, claimant = claims.max(0)
        matches = torch.where(claimed, claimant, matches)
    matched = matches >= 0
    index = matches.clamp(min=0)
    classes = torch.where(matched, labels[index] - 1, torch.full_like(matches, -1)) if len(boxes) else matches
    codes = encode_boxes(boxes[index], anchors) if len(boxes) else torch.zeros_like(anchors)
    codes = torch.where(matched[:, None], codes, torch.zeros_like(codes))
    return classes, codes, matched.sum().float()


def detection_loss(class_outputs: list[torch.Tensor], box_outputs: list[torch.Tensor], classes: torch.Tensor,
                   codes: torch.Tensor, positives: torch.Tensor,
                   settings: LossSettings) -> dict[str, torch.Tensor]:  # fmt: skip
    """The focal class loss and the Huber box loss of a batch: ``class_outputs``/``box_outputs``
    are the heads' per-level maps, ``classes`` (N, A) and ``codes`` (N, A, 4) the targets of
    every anchor in the heads' order."""
    num_classes = class_outputs[0].shape[1] // NUM_ANCHORS
    logits = flatten_levels(class_outputs, num_classes).float()
    deltas = flatten_levels(box_outputs, 4).float()
    normalizer = positives.sum() + 1.0
    targets = F.one_hot(classes.clamp(min=0), num_classes).float() * (classes >= 0)[..., None]
    class_loss = sigmoid_focal_loss(logits, targets, settings.alpha, settings.gamma, reduction="sum") / normalizer
    mask = codes != 0.0  # the reference masks by the target's value: a matched code of exactly 0 counts as none
    huber = F.huber_loss(deltas, codes, reduction="none", delta=settings.delta)
    box_loss = (huber * mask).sum() / (normalizer * 4.0)
    return {"loss_classifier": class_loss, "loss_box_reg": settings.box_weight * box_loss}
