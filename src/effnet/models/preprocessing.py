"""How images must be prepared for a model. Travels with the weights: the wrong mean/std or
crop silently costs points of accuracy, so it is never left to the caller to remember."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TF Lite models were trained on inputs scaled to [-1, 1].
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
# TF's eval pipeline center-crops `resolution` out of a `resolution + 32` resize.
CROP_PADDING = 32
# torchvision's InterpolationMode values that make sense for photographs
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


@dataclass(frozen=True)
class Preprocessing:
    resolution: int
    resize: int  # short side after resizing, before the center crop
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self):
        # Preprocessing also arrives from files (weights and ONNX metadata): check it here, so a
        # crafted or damaged file is a clear error rather than a failure deep inside torchvision.
        if (
            not (isinstance(self.resolution, int) and isinstance(self.resize, int))
            or min(self.resolution, self.resize) < 1
        ):
            raise ValueError(f"resolution and resize must be positive integers, got {self.resolution}, {self.resize}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean {self.mean} and std {self.std} must have one value per channel")
        values = (*self.mean, *self.std)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values) or 0 in self.std:
            raise ValueError(f"mean {self.mean} and std {self.std} must be finite numbers, std non-zero")

    @classmethod
    def for_model(cls, family: str, resolution: int) -> Preprocessing:
        lite = family == "lite"
        return cls(
            resolution=resolution,
            resize=resolution + CROP_PADDING,
            mean=LITE_MEAN if lite else IMAGENET_MEAN,
            std=LITE_STD if lite else IMAGENET_STD,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        d = dict(d)
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        return cls(**d)

    def transform(self):
        """The eval transform, from a PIL image (or uint8 tensor) to a normalised float tensor: the
        only one, used alike by predict, eval, validation during training and calibration."""
        import torch  # here, not at the top: the weights catalog reads this module without torch
        from torchvision.transforms import InterpolationMode, v2

        return v2.Compose(
            [
                v2.ToImage(),
                v2.RGB(),  # grayscale to 3 channels, so ImageNet-shaped models and weights apply
                v2.Resize(self.resize, interpolation=InterpolationMode(self.interpolation), antialias=True),
                v2.CenterCrop(self.resolution),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.mean, self.std),
            ]
        )
