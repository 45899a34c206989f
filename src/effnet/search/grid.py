"""The paper's search space: every (alpha, beta, gamma) on a grid whose FLOPs ratio is ~2.

Tan & Le (2019, section 3.3), step 1: fix phi = 1, assume twice the resources are available,
and grid-search alpha, beta, gamma >= 1 under alpha * beta**2 * gamma**2 ~= 2. Depth counts
once and width and resolution twice because FLOPs grow linearly with depth and quadratically
with width and resolution.
"""

from __future__ import annotations

import math

from effnet.core.errors import UsageError
from effnet.models.scaling import flops_ratio

# Beyond this many points the grid is almost certainly a typo (a step of 0.001, say): each
# point is a training run.
MAX_POINTS = 2000


def compound_grid(target: float = 2.0, tolerance: float = 0.1, step: float = 0.05) -> list[tuple[float, float, float]]:
    """All (alpha, beta, gamma) with values 1, 1+step, 1+2*step, ... and
    |alpha * beta**2 * gamma**2 - target| <= tolerance, ordered by (alpha, beta, gamma)."""
    for name, value in (("target", target), ("tolerance", tolerance), ("grid step", step)):
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise UsageError(f"{name} must be a finite number, got {value!r}")
    if target <= 1.0:
        raise UsageError(f"--target must be above 1 (FLOPs growth per unit of phi), got {target}")
    if not 0.0 <= tolerance < target - 1.0:
        raise UsageError(f"--tolerance must be in [0, target - 1), got {tolerance}")
    if not 0.001 <= step <= 1.0:
        raise UsageError(f"--grid-step must be in [0.001, 1], got {step}")
    high = target + tolerance
    # Every factor is >= 1, so each alone is bounded by the whole product.
    n_alpha = int(math.floor((high - 1.0) / step + 1e-9)) + 1
    n_square = int(math.floor((math.sqrt(high) - 1.0) / step + 1e-9)) + 1
    points = []
    for i in range(n_alpha):
        for j in range(n_square):
            for k in range(n_square):
                # Rounded so the values stored in the study are the grid's, not 1.1500000000000001.
                alpha, beta, gamma = (round(1.0 + n * step, 6) for n in (i, j, k))
                if abs(flops_ratio(alpha, beta, gamma) - target) <= tolerance + 1e-9:
                    points.append((alpha, beta, gamma))
                    if len(points) > MAX_POINTS:
                        raise UsageError(
                            f"the grid has more than {MAX_POINTS} points; "
                            "use a larger --grid-step or a smaller --tolerance"
                        )
    if not points:
        raise UsageError(f"no grid point with step {step} has alpha*beta^2*gamma^2 within {tolerance} of {target}")
    return points
