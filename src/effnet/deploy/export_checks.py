"""What an export is checked against and reports: the tolerance, the result, the error, and
the image-like input of the check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from effnet.core.errors import RunError

# Relative to the output's scale (its largest magnitude): fp32 reassociation in fused convs
# and a different kernel library stay far below this; a wrong graph does not.
TOLERANCE = 1e-4


class ExportError(RunError):
    """The exported file does not reproduce the eager model (exit code 1)."""


@dataclass
class ExportResult:
    path: Path
    format: str
    image_size: int
    batch_size: int | None  # None: dynamic
    max_abs_diff: float
    output_scale: float
    tolerance: float = TOLERANCE  # of the output scale

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / self.output_scale

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("format", "image_size", "batch_size", "max_abs_diff", "output_scale")}
        return {"path": str(self.path), **d, "relative_diff": self.relative_diff, "tolerance": self.tolerance}


def blocks_image(side: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """A seeded image of bright rectangles on a dark ground, in [0, 1]: the check input."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(channels, side, side, generator=g) * 0.1
    for _ in range(4):
        w, h = (int(v) for v in torch.randint(side // 8, side // 3, (2,), generator=g))
        x, y = (int(v) for v in torch.randint(0, side - max(w, h), (2,), generator=g))
        image[:, y : y + h, x : x + w] = torch.rand(channels, 1, 1, generator=g) * 0.5 + 0.5
    return image
