"""Fixtures shared by the serving tests (test_serve.py, test_serve_limits.py)."""

import importlib.util

import pytest
import torch
from PIL import Image

import effnet
from effnet.deploy.export import export
from tests.conftest import give_bn_real_statistics, made_once

SIDE = 32
CLASSES = ["T-shirt", "trouser", "pullover", "dress", "coat"]


PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def _make_files(root) -> None:
    from skimage import data

    torch.manual_seed(0)
    model = effnet.create_model(phi=-3, num_classes=len(CLASSES), resolution=SIDE, class_names=CLASSES)
    give_bn_real_statistics(model, SIDE, batch=8, damp_residuals=True)
    model.eval()
    effnet.save(model, root / "m.safetensors")
    export(model, root / "dynamic.onnx", dynamic_batch=True)
    export(model, root / "static.onnx")
    if importlib.util.find_spec("openvino"):
        export(model, root / "dynamic.xml", format="openvino", dynamic_batch=True)
    if importlib.util.find_spec("litert_torch"):
        export(model, root / "static.tflite")
    for i, name in enumerate(PHOTOS):
        Image.fromarray(getattr(data, name)()).save(root / f"{name}.{'png' if i % 2 else 'jpg'}")


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """A small classifier with realistic BN statistics, as .safetensors, as dynamic and static
    ONNX exports, an OpenVINO IR and a LiteRT file, and real photos (scikit-image's) as PNG and
    JPEG: made once for the session (~12 s) and shared by test_serve.py and
    test_serve_limits.py; tests that change a file copy it first."""
    root = made_once(tmp_path_factory, "serve-files", _make_files)
    return root, [root / f"{name}.{'png' if i % 2 else 'jpg'}" for i, name in enumerate(PHOTOS)]
