"""Decoding: orientation, transparency, 16-bit depth, and bad files."""

import numpy as np
import pytest
from PIL import Image

from effnet.core.errors import UsageError
from effnet.datasets.images import load_rgb


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_rgb(tmp_path / "r.jpg").size == (20, 40)


def test_rgba_is_composited_on_white(tmp_path):
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "t.png")
    assert load_rgb(tmp_path / "t.png").getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_is_scaled_not_saturated(tmp_path):
    arr = np.full((4, 4), 32768, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    assert load_rgb(tmp_path / "g16.png").getpixel((0, 0)) == (128, 128, 128)


def test_grayscale_becomes_rgb(tmp_path):
    Image.new("L", (4, 4), 7).save(tmp_path / "g.png")
    assert load_rgb(tmp_path / "g.png").getpixel((0, 0)) == (7, 7, 7)


@pytest.mark.parametrize("content", [b"", b"hello", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_bad_files_name_the_path(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="bad.png"):
        load_rgb(path)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    Image.new("L", (200, 200)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(UsageError, match="decompression bomb"):
        load_rgb(tmp_path / "big.png")
