"""Train and eval transforms, built from torchvision's transforms v2."""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode, v2

AUGMENTATIONS = ("paper", "light", "none")


def eval_transform(image_size: int, mean, std) -> v2.Compose:
    """Resize the short side and center-crop: what the model sees at test time."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RGB(),  # grayscale to 3 channels, so ImageNet-shaped models and weights apply
            v2.Resize(image_size, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


def train_transform(image_size: int, mean, std, augment: str = "paper") -> v2.Compose:
    """``paper``: random-resized crop, flip and RandAugment (N=2, M=9), the EfficientNet recipe.
    ``light``: resize, a padded random crop and flip, for small, centred images such as
    Fashion-MNIST, where crops down to 8% of the image would cut the object away.
    ``none``: the eval transform."""
    if augment == "none":
        return eval_transform(image_size, mean, std)
    if augment == "paper":
        geometry = [
            v2.RandomResizedCrop(image_size, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandAugment(num_ops=2, magnitude=9),
        ]
    elif augment == "light":
        geometry = [
            v2.Resize(image_size, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(image_size),
            v2.RandomCrop(image_size, padding=max(1, image_size // 8)),
            v2.RandomHorizontalFlip(),
        ]
    else:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    return v2.Compose(
        [v2.ToImage(), v2.RGB(), *geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    )
