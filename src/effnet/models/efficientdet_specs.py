"""EfficientDet's scaling (Tan, Pang & Le, CVPR 2020, section 4.2 and Table 1): one published
table and one rule, as the classifiers have.

The rule scales everything from one coefficient phi: the backbone B_phi, the BiFPN's width
W = 64 * 1.35^phi and depth 3 + phi, the box/class heads' depth 3 + floor(phi / 3) and the input
512 + 128 * phi. The released models (the TF checkpoints of google/automl, ported by ``effdet``)
deviate from it past D1 — D2 is 112 wide where the rule gives 117, D5-D7 are shallower, D7 keeps
B6 and grows its anchors instead — so named models read the table and ``phi=`` the rule, exactly as
``effnet.models.scaling`` does for B0-B8.

Every released detector is TF-trained: TF's SAME padding in the backbone and in the BiFPN's
pooling, BN eps 1e-3, and a bias on convolutions that BatchNorm follows (a redundancy the
checkpoints carry, so the layers keep it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from effnet.core.errors import UsageError
from effnet.models.scaling import round_channels

WEIGHTINGS = ("fastattn", "attn", "sum")  # how a BiFPN node fuses its inputs (paper, section 3.3)


@dataclass(frozen=True)
class DetScale:
    """One row of the table: what differs between D0 and D7 (and the Lite models)."""

    backbone: str  # an effnet registry name, or "efficientnet_b0_phi<phi>" from the rule
    image_size: int  # the BiFPN is built for it: the upsampling sizes are fixed
    fpn_channels: int  # W
    fpn_repeats: int  # BiFPN cells
    head_repeats: int  # separable convolutions in each of the box and class heads before the output
    weighting: str = "fastattn"  # D6, D7 and the Lite models sum their inputs unweighted
    anchor_scale: float = 4.0  # anchor side = anchor_scale x the level's stride (D7: 5; Lite0-2: 3)
    max_level: int = 7  # P3..P7
    act: str = "silu"  # the Lite models use ReLU6 throughout (quantization-friendly)
    backbone_phi: float | None = None  # set when the backbone comes from the compound rule

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise UsageError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        # Any side works (each level is the one below halved and rounded up: Lite0's 320 px gives
        # a 3x3 P7), but below 2^max_level the top levels would be 1x1 copies of each other.
        if not (isinstance(self.image_size, int) and self.image_size >= 1 << self.max_level):
            raise UsageError(f"image size must be an integer of at least {1 << self.max_level} "
                             f"(2^{self.max_level}, the top level's stride), got {self.image_size!r}")  # fmt: skip


MIN_LEVEL = 3
NUM_SCALES = 3  # anchor octaves per level: 2^0, 2^(1/3), 2^(2/3)
# (x, y) multipliers of the anchor's side: TF's (1.4, 0.7) pair, which is not area-preserving
ASPECT_RATIOS = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))
NUM_ANCHORS = NUM_SCALES * len(ASPECT_RATIOS)  # per grid cell: the heads' outputs are this many x classes / x 4

# The released models: google/automl's efficientdet/hparams_config.py, as effdet's tf_ configs.
PUBLISHED: dict[str, DetScale] = {
    "efficientdet_d0": DetScale("efficientnet_b0", 512, 64, 3, 3),
    "efficientdet_d1": DetScale("efficientnet_b1", 640, 88, 4, 3),
    "efficientdet_d2": DetScale("efficientnet_b2", 768, 112, 5, 3),
    "efficientdet_d3": DetScale("efficientnet_b3", 896, 160, 6, 4),
    "efficientdet_d4": DetScale("efficientnet_b4", 1024, 224, 7, 4),
    "efficientdet_d5": DetScale("efficientnet_b5", 1280, 288, 7, 4),
    "efficientdet_d6": DetScale("efficientnet_b6", 1280, 384, 8, 5, "sum"),
    "efficientdet_d7": DetScale("efficientnet_b6", 1536, 384, 8, 5, "sum", anchor_scale=5.0),
    "efficientdet_d7x": DetScale("efficientnet_b7", 1536, 384, 8, 5, "sum", max_level=8),
    "efficientdet_lite0": DetScale("efficientnet_lite0", 320, 64, 3, 3, "sum", 3.0, act="relu6"),
    "efficientdet_lite1": DetScale("efficientnet_lite1", 384, 88, 4, 3, "sum", 3.0, act="relu6"),
    "efficientdet_lite2": DetScale("efficientnet_lite2", 448, 112, 5, 3, "sum", 3.0, act="relu6"),
    "efficientdet_lite3": DetScale("efficientnet_lite3", 512, 160, 6, 4, "sum", 4.0, act="relu6"),
    "efficientdet_lite4": DetScale("efficientnet_lite4", 640, 224, 7, 4, "sum", 4.0, act="relu6"),
}


def detector_scale(phi: float) -> DetScale:
    """The paper's rule for any phi >= 0 (Table 1's formulas). Integer phi takes the published
    backbone B_phi (as the paper does); other phi the classifiers' compound rule. Width is
    rounded as the classifiers round channels (to 8, never 10% below), the depths down to whole
    layers, the input to a multiple of 128 (2^7: the P7 grid must tile it)."""
    if not (isinstance(phi, int | float) and math.isfinite(phi) and 0 <= phi <= 8):
        raise UsageError(f"EfficientDet's phi must be a number in [0, 8], got {phi!r}")
    whole = float(phi).is_integer()
    backbone = f"efficientnet_b{int(phi)}" if whole else f"efficientnet_b0_phi{phi:g}"
    return DetScale(
        backbone=backbone,
        image_size=128 * round((512 + 128 * phi) / 128),
        fpn_channels=round_channels(64, 1.35**phi),
        fpn_repeats=3 + math.floor(phi),
        head_repeats=3 + math.floor(phi / 3),
        backbone_phi=None if whole else float(phi),
    )


def get_scale(name: str | None = None, phi: float | None = None, image_size: int | None = None) -> tuple[str, DetScale]:
    """(the detector's name, its row): a published name, or ``phi`` by the rule; ``image_size``
    replaces the row's."""
    if phi is not None:
        name, scale = f"efficientdet_phi{phi:g}", detector_scale(phi)
    elif name in PUBLISHED:
        scale = PUBLISHED[name]
    else:
        raise UsageError(f"unknown EfficientDet {name!r}; known: {', '.join(PUBLISHED)}, or phi=")
    return name, scale if image_size is None else replace(scale, image_size=image_size)
