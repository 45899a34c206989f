"""Optional dependency groups (pyproject's extras): building a model needs only torch; training,
deployment, search and compression each bring their own libraries."""

from __future__ import annotations

import importlib.util

from effnet.core.errors import MissingExtra

# extra -> the import names it provides (what find_spec can see without importing them)
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("timm", "tensorboard", "matplotlib", "sklearn"),
    "deploy": ("onnx", "onnxscript", "onnxruntime"),
    "openvino": ("openvino",),
    "search": ("optuna",),
    "compress": ("torch_pruning",),
    "tasks": ("pycocotools", "skimage", "tifffile"),
    "serve": ("starlette", "uvicorn", "python_multipart", "prometheus_client"),
}


def require(*extras: str) -> None:
    """Raise MissingExtra (one line, exit 2) naming the first missing module and its extra."""
    for extra in extras:
        for module in EXTRAS[extra]:
            if importlib.util.find_spec(module) is None:
                raise MissingExtra(extra, module)
