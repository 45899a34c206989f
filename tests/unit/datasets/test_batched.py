"""The batched input pipeline against torchvision's per-image transforms, on real Fashion-MNIST."""

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from effnet.datasets import ImageDataset, load_data
from effnet.datasets.batched import BatchedImages, applies
from effnet.datasets.builtin import FASHION_MNIST_DIR
from effnet.datasets.transforms import train_transform
from effnet.models.preprocessing import Preprocessing
from effnet.training.sampling import epoch_loader
from tests.conftest import requires

SIZE = 32
PRE = Preprocessing(resolution=SIZE, resize=SIZE, interpolation="bicubic", mean=(0.485, 0.456, 0.406),
                    std=(0.229, 0.224, 0.225))  # fmt: skip


pytestmark = requires("Fashion-MNIST", FASHION_MNIST_DIR.is_dir(), "make test installs dataset-fashion-mnist")


@pytest.fixture(scope="module")
def split():
    return load_data("fashion-mnist", limit_train=256).split("train")


def test_unaugmented_batches_equal_the_per_image_eval_transform_to_the_bit(split):
    batched = BatchedImages(split, PRE, "none")
    per_image = ImageDataset(split, train_transform(PRE, "none"))
    indices = torch.tensor([0, 5, 17, 255, 3])
    images, labels = batched.batch(indices, torch.Generator().manual_seed(0))
    expected = torch.stack([per_image[int(i)][0] for i in indices])
    assert images.shape == (5, 3, SIZE, SIZE)
    assert torch.equal(images, expected)
    assert labels.tolist() == [per_image[int(i)][1] for i in indices]
    assert torch.equal(batched[17][0], per_image[17][0])  # one sample: the eval form


def test_light_batches_are_padded_crops_and_flips_of_the_per_image_pipeline(split):
    """Every augmented image is one of the (2 pad + 1)^2 x 2 crops and flips the per-image
    RandomCrop(padding) + RandomHorizontalFlip can draw, and the draws cover them all."""
    batched, plain = BatchedImages(split, PRE, "light"), BatchedImages(split, PRE, "none")
    pad = batched.pad
    assert pad == SIZE // 8
    indices = torch.arange(256)
    images, _ = batched.batch(indices, torch.Generator().manual_seed(1))
    originals, _ = plain.batch(indices, torch.Generator())
    zero = (-torch.tensor(plain.mean) / torch.tensor(plain.std)).view(3, 1, 1)  # a padded pixel after normalization
    seen_offsets, flips = set(), 0
    for image, original in zip(images, originals, strict=True):
        padded = torch.nn.functional.pad(original - zero, (pad, pad, pad, pad)) + zero
        match = None
        for top in range(2 * pad + 1):
            for left in range(2 * pad + 1):
                crop = TF.crop(padded, top, left, SIZE, SIZE)
                for flipped in (False, True):
                    if torch.allclose(image, TF.horizontal_flip(crop) if flipped else crop, atol=1e-6):
                        match = (top, left, flipped)
                        break
                if match:
                    break
            if match:
                break
        assert match is not None, "an augmented image is no crop/flip of its original"
        seen_offsets.add(match[:2])
        flips += match[2]
    assert len(seen_offsets) >= 60  # of 81 offsets, with 256 draws (~77 expected)
    assert 90 <= flips <= 166  # Binomial(256, 1/2): 128 +- 4.7 sd


def test_a_resumed_epoch_continues_with_the_same_batches(split):
    batched = BatchedImages(split, PRE, "light")
    kwargs = dict(seed=3, epoch=2, rank=0, world=1, batch_size=32, batches=8)
    whole = list(epoch_loader(batched, **kwargs))
    tail = list(epoch_loader(batched, **kwargs, start_batch=5))
    assert len(whole) == 8 and len(tail) == 3
    for (xa, ya), (xb, yb) in zip(whole[5:], tail, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other_epoch = list(epoch_loader(batched, **{**kwargs, "epoch": 3}))
    assert not torch.equal(other_epoch[0][0], whole[0][0])


def test_a_large_split_is_resized_per_batch_alike(split, monkeypatch):
    monkeypatch.setattr("effnet.datasets.batched.MAX_RESIZED_BYTES", 0)
    lazy = BatchedImages(split, PRE, "none")
    assert lazy.resize_per_batch and lazy.images.shape[-1] == 28
    indices = torch.tensor([4, 9, 100])
    monkeypatch.undo()
    eager = BatchedImages(split, PRE, "none")
    assert torch.equal(lazy.batch(indices, torch.Generator())[0], eager.batch(indices, torch.Generator())[0])


def test_what_the_batched_pipeline_cannot_do_is_named(split):
    assert applies(split, "light", None, 0.0, None) is None
    assert "RandAugment" in applies(split, "light", 9, 0.0, None)
    assert "--augment paper" in applies(split, "paper", None, 0.0, None)
    assert "random erasing" in applies(split, "none", None, 0.5, None)
    assert "progressive" in applies(split, "none", None, 0.0, 3)
