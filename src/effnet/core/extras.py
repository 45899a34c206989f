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
    "litert": ("litert_torch", "ai_edge_litert"),  # converting to .tflite; running one needs only ai_edge_litert
    "executorch": ("executorch",),
}


def require(*extras: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise MissingExtra (one line, exit 2) naming the first missing module and its extra;
    ``modules``: only these of the extra's modules (running a .tflite needs only the runtime)."""
    for extra in extras:
        for module in modules or EXTRAS[extra]:
            if importlib.util.find_spec(module) is None:
                raise MissingExtra(extra, module)


def installed(extra: str) -> bool:
    """Whether every module of ``extra`` is importable (found, not imported)."""
    return all(importlib.util.find_spec(module) is not None for module in EXTRAS[extra])
