"""The batched input pipeline: an in-memory split decoded and resized once into one uint8 tensor,
then augmented a whole batch at a time with tensor operations.

Per-image torchvision transforms in the loader cost B0 at 64 px 11% of every training step on two
cores (41 ms of a 360 ms step; benchmarks/precision/train_throughput.json), because the loader
runs them one image at a time between steps. Here the resize happens once, and a batch's padded
random crops and flips are two gathers and a select. The result is what ``train_transform``
gives image by image: the same resized pixels (the eval form is equal to the bit), crops drawn
from the same offsets, a flip with probability 1/2, the same normalization.

It takes ``--augment none`` and ``light``; RandAugment, random-resized crops and random erasing
stay per image (``applies`` says why not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from effnet.datasets.builtin import ArraySplit
from effnet.models.preprocessing import Preprocessing

# Above this many bytes of resized images the split stays at its own size and each batch is
# resized as it is drawn (Fashion-MNIST at 224 px would take 3 GB).
MAX_RESIZED_BYTES = 1 << 30
RESIZE_CHUNK = 4096


def applies(split, augment: str, randaug, random_erase: float, progressive) -> str | None:
    """None if the batched pipeline can produce this run's batches, else why not."""
    if not isinstance(split, ArraySplit):
        return "the images are files, decoded one at a time (only in-memory data sets are batched)"
    if augment not in ("none", "light"):
        return f"--augment {augment} has per-image random crops of any size (batched: none or light)"
    if randaug is not None:
        return "RandAugment runs per image"
    if random_erase:
        return "random erasing runs per image"
    if progressive:
        return "progressive learning changes the image size per stage"
    return None


class BatchedImages(torch.utils.data.Dataset):
    """An ``ArraySplit`` at ``pre.resolution``, as uint8, with ``batch(indices, generator)`` for
    training; indexing one sample gives its un-augmented (eval) form, as ``ImageDataset`` would."""

    def __init__(self, split: ArraySplit, pre: Preprocessing, augment: str):
        self.size, self.augment = pre.resolution, augment
        self.interpolation = InterpolationMode(pre.interpolation)
        images = torch.from_numpy(split.images)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        self.labels = torch.as_tensor(split.labels, dtype=torch.long)
        resized_bytes = len(images) * images.shape[1] * self.size**2
        self.resize_per_batch = resized_bytes > MAX_RESIZED_BYTES
        if self.resize_per_batch:
            self.images = images.contiguous()
        else:
            self.images = torch.cat([self._resize(chunk) for chunk in images.split(RESIZE_CHUNK)])
        self.mean, self.std = list(pre.mean), list(pre.std)
        self.pad = max(1, self.size // 8)  # train_transform's light RandomCrop padding

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        """Resize (shorter side) and centre crop, as the per-image transforms do, on uint8."""
        images = TF.resize(images, self.size, interpolation=self.interpolation, antialias=True)
        return TF.center_crop(images, self.size).contiguous()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        x, y = self._finish(self._take(torch.tensor([index]))), self.labels[index]
        return x[0], int(y)

    def _take(self, indices: torch.Tensor) -> torch.Tensor:
        images = self.images[indices]
        return self._resize(images) if self.resize_per_batch else images

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> normalized float, gray -> RGB (ToDtype, RGB and Normalize)."""
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        return TF.normalize(TF.to_dtype(x, torch.float32, scale=True), self.mean, self.std)

    def batch(self, indices: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch of ``indices``: augmented with draws from ``generator`` alone."""
        images = self._take(indices)
        if self.augment == "light":
            images = self._crop_and_flip(images, generator)
        return self._finish(images), self.labels[indices]

    def _crop_and_flip(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Each image zero-padded by ``pad``, cropped back to its size at a random offset in
        [0, 2 pad] per axis, and mirrored with probability 1/2 (RandomCrop, RandomHorizontalFlip)."""
        n, c, size, pad = len(images), images.shape[1], self.size, self.pad
        offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        padded = F.pad(images, (pad, pad, pad, pad))
        steps = torch.arange(size)
        rows = (offsets[0, :, None] + steps)[:, None, :, None].expand(n, c, size, size + 2 * pad)
        cols = offsets[1, :, None] + steps
        cols = torch.where(flip[:, None], cols.flip(-1), cols)[:, None, None, :].expand(n, c, size, size)
        return padded.gather(2, rows).gather(3, cols)
