"""EfficientDet's anchors and box codes (RetinaNet's, in TF's conventions): boxes as
(y1, x1, y2, x2), codes as (ty, tx, th, tw), the anchors of a level ordered by grid cell (row-major)
then by octave and aspect ratio — the order of the heads' output channels.

The anchors are computed in float64 and rounded once to float32, as the reference does, so that
decoded boxes agree to the last bit. torchvision's ``AnchorGenerator`` and ``BoxCoder`` are not
these: they round anchor sides, keep areas equal across aspect ratios and order (x1, y1, x2, y2).
"""

from __future__ import annotations

import torch

from effnet.models.bifpn import feature_sizes


def anchor_boxes(image_size: int, *, min_level: int, max_level: int, anchor_scale: float, num_scales: int,
                 aspect_ratios: tuple[tuple[float, float], ...]) -> torch.Tensor:  # fmt: skip
    """(N, 4) anchors (y1, x1, y2, x2) in input pixels: at each level's grid cell centres, sides
    anchor_scale x stride x 2^(octave / num_scales), times the (x, y) aspect multipliers."""
    grid = feature_sizes(image_size, max_level)
    levels = []
    for level in range(min_level, max_level + 1):
        stride = image_size / grid[level]
        centres = torch.arange(stride / 2, image_size, stride, dtype=torch.float64)
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        y, x = y.reshape(-1), x.reshape(-1)
        per_anchor = []
        for octave in range(num_scales):
            base = anchor_scale * stride * 2 ** (octave / num_scales)
            for ax, ay in aspect_ratios:
                half_x, half_y = base * ax / 2.0, base * ay / 2.0
                per_anchor.append(torch.stack([y - half_y, x - half_x, y + half_y, x + half_x], dim=1))
        levels.append(torch.stack(per_anchor, dim=1).reshape(-1, 4))
    return torch.cat(levels).float()


def decode_boxes(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """(x1, y1, x2, y2) boxes from (ty, tx, th, tw) codes relative to (y1, x1, y2, x2) anchors:
    centre shifted by t * anchor side, sides scaled by exp(t)."""
    yc_a, xc_a = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    ha, wa = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ty, tx, th, tw = codes.unbind(dim=1)
    w, h = torch.exp(tw) * wa, torch.exp(th) * ha
    yc, xc = ty * ha + yc_a, tx * wa + xc_a
    return torch.stack([xc - w / 2.0, yc - h / 2.0, xc + w / 2.0, yc + h / 2.0], dim=1)


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """(ty, tx, th, tw) codes of (y1, x1, y2, x2) boxes relative to matched anchors: the
    regression targets (``eps`` keeps empty boxes finite, as the reference's coder does)."""
    ha, wa = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    yc_a, xc_a = anchors[:, 0] + ha / 2, anchors[:, 1] + wa / 2
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    yc, xc = boxes[:, 0] + h / 2, boxes[:, 1] + w / 2
    ha, wa, h, w = ha + eps, wa + eps, h + eps, w + eps  # after the centres, as the reference
    return torch.stack([(yc - yc_a) / ha, (xc - xc_a) / wa, torch.log(h / ha), torch.log(w / wa)], dim=1)


def flatten_levels(maps: list[torch.Tensor], per_anchor: int) -> torch.Tensor:
    """(N, anchors, per_anchor) from the heads' per-level (N, A x per_anchor, H, W) maps, in the
    anchors' order: level, then grid cell (row-major), then octave and aspect ratio."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, per_anchor) for m in maps], 1)
