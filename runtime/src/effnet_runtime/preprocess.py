"""Images to the model's input with Pillow and NumPy: the same steps as effnet's eval transform
(torchvision: RGB, resize of the short side, center crop, scale to [0, 1], normalise), with the
sizes computed as torchvision computes them, so both give the same pixels up to the rounding
of the resize (tests/unit/deploy/test_runtime_package.py measures the difference)."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageOps

from effnet_runtime.errors import RuntimeUsageError

RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}  # fmt: skip


def load(source) -> Image.Image:
    """A decoded, upright RGB image from a path, bytes or a PIL image; a RuntimeUsageError naming
    the file otherwise. Transparency is composited on white and 16-bit grey scaled to 8 bits, as
    effnet does."""
    if isinstance(source, Image.Image):
        return _rgb(source)
    name = "image" if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.load()
            return _rgb(ImageOps.exif_transpose(img))
    except FileNotFoundError:
        raise RuntimeUsageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise RuntimeUsageError(f"{name}: is a directory, not an image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        empty = not isinstance(source, bytes) and os.path.isfile(source) and os.path.getsize(source) == 0
        raise RuntimeUsageError(
            f"{name}: {'empty file (0 bytes)' if empty else f'cannot decode image ({exc})'}"
        ) from None


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        eight_bit = (np.asarray(img, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
        return Image.fromarray(eight_bit, mode="L").convert("RGB")
    return img.convert("RGB")


def preprocess(img: Image.Image, prep: dict) -> np.ndarray:
    """(3, resolution, resolution) float32: the short side resized to ``resize`` (the long one
    truncated, as torchvision does), the center cropped, scaled to [0, 1] and normalised."""
    width, height = img.size
    short, long = sorted((width, height))
    new_short, new_long = prep["resize"], int(prep["resize"] * long / short)
    size = (new_short, new_long) if width <= height else (new_long, new_short)
    img = img.resize(size, RESAMPLE[prep["interpolation"]])
    crop = prep["resolution"]
    left, top = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
    pixels = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0
    mean, std = np.asarray(prep["mean"], np.float32), np.asarray(prep["std"], np.float32)
    return ((pixels - mean) / std).transpose(2, 0, 1)
