"""Compound scaling (Tan & Le, 2019, section 3.3) and the published per-variant table.

Two sources of truth live here on purpose:

* ``compound_scale(phi)`` is the paper's rule: depth d = alpha**phi, width w = beta**phi,
  resolution r = gamma**phi, with alpha * beta**2 * gamma**2 ~= 2 so FLOPs grow ~2**phi.
* ``PUBLISHED`` is the table the authors actually released for B0-B8 and L2. Past B1 it does
  not follow the rule (B7 would have depth 1.2**7 = 3.58 but was released with 3.1), so named
  models use this table and ``phi=`` uses the formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from effnet.core.errors import UsageError

# Grid-searched on B0 in the paper under alpha * beta**2 * gamma**2 ~= 2.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15

# phi outside this range gives models that are either degenerate (a handful of channels)
# or far beyond L2 (tens of billions of parameters); both are almost certainly typos.
PHI_RANGE = (-6.0, 12.0)


@dataclass(frozen=True)
class Scale:
    """Multipliers applied to the unscaled baseline, plus the input size they imply."""

    width: float  # multiplies every stage's channels (then rounded to multiples of 8)
    depth: float  # multiplies every stage's repeats (then rounded up)
    resolution: int  # input side in pixels
    dropout: float  # dropout before the classifier, grows with model size
    resolution_multiplier: float = 1.0


# Released settings. Lite rows come from the TF efficientnet_lite builder: same widths and
# depths as B0-B4 but smaller resolutions for B3/B4, and lower dropout for Lite4.
PUBLISHED: dict[str, Scale] = {
    "efficientnet_b0": Scale(width=1.0, depth=1.0, resolution=224, dropout=0.2),
    "efficientnet_b1": Scale(width=1.0, depth=1.1, resolution=240, dropout=0.2),
    "efficientnet_b2": Scale(width=1.1, depth=1.2, resolution=260, dropout=0.3),
    "efficientnet_b3": Scale(width=1.2, depth=1.4, resolution=300, dropout=0.3),
    "efficientnet_b4": Scale(width=1.4, depth=1.8, resolution=380, dropout=0.4),
    "efficientnet_b5": Scale(width=1.6, depth=2.2, resolution=456, dropout=0.4),
    "efficientnet_b6": Scale(width=1.8, depth=2.6, resolution=528, dropout=0.5),
    "efficientnet_b7": Scale(width=2.0, depth=3.1, resolution=600, dropout=0.5),
    "efficientnet_b8": Scale(width=2.2, depth=3.6, resolution=672, dropout=0.5),
    "efficientnet_l2": Scale(width=4.3, depth=5.3, resolution=800, dropout=0.5),
    "efficientnet_lite0": Scale(width=1.0, depth=1.0, resolution=224, dropout=0.2),
    "efficientnet_lite1": Scale(width=1.0, depth=1.1, resolution=240, dropout=0.2),
    "efficientnet_lite2": Scale(width=1.1, depth=1.2, resolution=260, dropout=0.3),
    "efficientnet_lite3": Scale(width=1.2, depth=1.4, resolution=280, dropout=0.3),
    "efficientnet_lite4": Scale(width=1.4, depth=1.8, resolution=300, dropout=0.3),
    # EfficientNetV2 (automl efficientnetv2/effnetv2_configs.py). B1-B3 scale V2-B0's table by
    # V1's multipliers; S, M, L and XL are tables of their own (width = depth = 1). Resolution is
    # the released eval size: V2 trains smaller (progressive learning ends at 300 px for S).
    "efficientnetv2_b0": Scale(width=1.0, depth=1.0, resolution=224, dropout=0.2),
    "efficientnetv2_b1": Scale(width=1.0, depth=1.1, resolution=240, dropout=0.2),
    "efficientnetv2_b2": Scale(width=1.1, depth=1.2, resolution=260, dropout=0.3),
    "efficientnetv2_b3": Scale(width=1.2, depth=1.4, resolution=300, dropout=0.3),
    "efficientnetv2_s": Scale(width=1.0, depth=1.0, resolution=384, dropout=0.2),
    "efficientnetv2_m": Scale(width=1.0, depth=1.0, resolution=480, dropout=0.3),
    "efficientnetv2_l": Scale(width=1.0, depth=1.0, resolution=480, dropout=0.4),
    "efficientnetv2_xl": Scale(width=1.0, depth=1.0, resolution=512, dropout=0.4),
}


# The named models that `phi=` scales from, per family. A V2 baseline scales by the same rule and
# coefficients as V1 (the V2 paper scales B0 to B3 with V1's multipliers and defines no other).
PHI_BASELINES = {
    "efficientnet_b0": "efficientnet",
    "efficientnet_lite0": "lite",
    "efficientnetv2_b0": "efficientnetv2",
    "efficientnetv2_s": "efficientnetv2_s",
}


def _check_finite(name: str, value: float, low: float, high: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise UsageError(f"{name} must be finite, got {value}")
    if not low <= value <= high:
        raise UsageError(f"{name}={value} is outside the supported range [{low}, {high}]")
    return value


def dropout_for_phi(phi: float) -> float:
    """Dropout that reproduces the published B0-B7 values: +0.1 every two steps of phi."""
    return round(min(0.5, max(0.0, 0.2 + 0.1 * math.floor(phi / 2))), 2)


def compound_scale(
    phi: float,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    base_resolution: int = 224,
) -> Scale:
    """The paper's compound-scaling rule: width beta**phi, depth alpha**phi, resolution gamma**phi.

    ``phi`` may be fractional or negative (scaling the baseline down). FLOPs grow by about
    (alpha * beta**2 * gamma**2) ** phi.
    """
    phi = _check_finite("phi", phi, *PHI_RANGE)
    alpha = _check_finite("alpha", alpha, 1.0, 4.0)
    beta = _check_finite("beta", beta, 1.0, 4.0)
    gamma = _check_finite("gamma", gamma, 1.0, 4.0)
    base_resolution = int(_check_finite("base_resolution", base_resolution, 8, 4096))
    res_mult = gamma**phi
    return Scale(
        width=beta**phi,
        depth=alpha**phi,
        resolution=max(8, round(base_resolution * res_mult)),
        dropout=dropout_for_phi(phi),
        resolution_multiplier=res_mult,
    )


def flops_ratio(alpha: float, beta: float, gamma: float) -> float:
    """Growth of FLOPs per unit of phi: depth counts once, width and resolution squared."""
    return alpha * beta**2 * gamma**2


def round_channels(channels: int, width: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Scale and round channels to a multiple of ``divisor``, as the TF reference does.

    Rounds to the nearest multiple but never drops more than 10% below the scaled value (V1;
    V2 passes ``round_limit=0``: no floor), and never below ``divisor``.
    """
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < round_limit * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's repeats; always rounds up, so depth never shrinks below one block."""
    return max(1, int(math.ceil(depth * repeats)))
