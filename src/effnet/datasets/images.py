"""Decoding image files into RGB PIL images, with errors that name the file."""

from __future__ import annotations

import io
import os
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from effnet.core.errors import UsageError


class ImageDecodeError(UsageError):
    """An image file that cannot be used; ``reason`` is the message without the path."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open, fully decode and orient an image; any failure is a UsageError naming ``path``."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        # A pipe or device would block open() or stream forever; only plain files are images.
        raise ImageDecodeError(path, "not a regular file (a pipe, socket or device)")
    try:
        return _decode(path, None)
    except FileNotFoundError:
        raise ImageDecodeError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageDecodeError(path, "is a directory, not an image") from None
    except ImageDecodeError as exc:
        raise type(exc)(path, exc.reason) from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's ways of saying "not a valid image"
        reason = "empty file (0 bytes)" if _is_empty(path) else f"cannot decode image ({exc})"
        raise ImageDecodeError(path, reason) from None


def decode_rgb(data: bytes, name: str = "image", max_pixels: int | None = None) -> Image.Image:
    """``load_rgb`` for bytes in memory (an upload). ``max_pixels`` refuses a larger image from
    its header, before any pixel is decoded: a small compressed file can decode to gigabytes."""
    if not data:
        raise ImageDecodeError(name, "empty (0 bytes)")
    try:
        return _decode(io.BytesIO(data), max_pixels)
    except ImageDecodeError as exc:
        raise type(exc)(name, exc.reason) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(name, "not an image in a format Pillow reads") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(name, f"cannot decode image ({exc})") from None


class PixelLimitError(ImageDecodeError):
    """An image whose header declares more pixels than allowed (a decompression bomb)."""


def _decode(source, max_pixels: int | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
                if max_pixels is not None and width * height > max_pixels:
                    raise PixelLimitError(
                        "image", f"refused, {width}x{height} is over the limit of {max_pixels:,} pixels"
                    )
                img.load()  # decode now, so truncated files fail here rather than later
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PixelLimitError("image", f"refused, decompression bomb ({exc})") from None


def decode_each(paths, errors: list):
    """(path, RGB image) for every decodable file; the others' errors are appended to ``errors``,
    so that one bad file does not cost the rest their results."""
    for path in paths:
        try:
            yield path, load_rgb(path)
        except UsageError as exc:
            errors.append(exc)


def _is_empty(path) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: transparent pixels are usually background, and black would
        # invent dark objects the model never saw.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit images: scale to 8 bits rather than clip everything above 255 to white.
        import numpy as np

        eight_bit = (np.asarray(img, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
        return Image.fromarray(eight_bit, mode="L").convert("RGB")
    return img.convert("RGB")
