"""Train-time augmentation, built from torchvision's transforms v2. The eval transform is the
one that travels with the weights (``Preprocessing.transform``)."""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode, v2

from effnet.core.errors import UsageError
from effnet.datasets.choices import AUGMENTATIONS
from effnet.models.preprocessing import Preprocessing


def train_transform(pre: Preprocessing, augment: str = "paper", randaug: int | None = None,
                    random_erase: float = 0.0) -> v2.Compose:  # fmt: skip
    """``paper``: random-resized crop, flip and RandAugment (N=2, M=9), the EfficientNet recipe.
    ``light``: resize, a padded random crop and flip, for small, centred images such as
    Fashion-MNIST, where crops down to 8% of the image would cut the object away.
    ``none``: the eval transform. ``randaug`` sets RandAugment's magnitude (``light`` gains
    RandAugment with it); progressive learning raises it stage by stage. ``random_erase``: the
    chance that one random rectangle of the normalized image is set to 0, the mean."""
    if augment not in AUGMENTATIONS:
        raise UsageError(f"--augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
    if augment == "none":
        for name, value in (("randaug", randaug), ("random-erase", random_erase or None)):
            if value is not None:
                raise UsageError(f"--{name} needs an augmentation (--augment paper or light), not --augment none")
        return pre.transform()
    size, interpolation = pre.resolution, InterpolationMode(pre.interpolation)
    if augment == "paper":
        geometry = [
            v2.RandomResizedCrop(size, interpolation=interpolation, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandAugment(num_ops=2, magnitude=9 if randaug is None else randaug),
        ]
    else:
        geometry = [
            v2.Resize(size, interpolation=interpolation, antialias=True),
            v2.CenterCrop(size),
            v2.RandomCrop(size, padding=max(1, size // 8)),
            v2.RandomHorizontalFlip(),
            *([v2.RandAugment(num_ops=2, magnitude=randaug)] if randaug is not None else []),
        ]
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RGB(),
            *geometry,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(pre.mean, pre.std),
            *([v2.RandomErasing(p=random_erase)] if random_erase else []),
        ]  # fmt: skip
    )
