"""Calibration data for post-training int8: seeded training inputs in the model's own eval
preprocessing, checked against the exported graph's input before any quantizer sees them; and
the size of what a quantizer wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from effnet.core.errors import UsageError
from effnet.datasets.loading import ordered_loader
from effnet.tasks.registry import entry_of


def calibration_batches(model, data_options: dict, n: int, batch_size: int = 32, seed: int = 0,
                        training: dict | None = None) -> list[np.ndarray]:  # fmt: skip
    """``n`` seeded training inputs as the model's export takes them (float32 arrays): NCHW
    batches through its own eval preprocessing, or single [0, 1] images for a model that runs one
    image at a time (a detector). ``data_options``: ``load_data``'s (``Provenance.data_options``)."""
    entry = entry_of(model)
    part = entry.eval_data(model, data_options, "train", training or {}, origin="the model")
    order = torch.randperm(len(part.dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    if entry.per_image:
        return [part.dataset[i][0].numpy() for i in order]
    subset = torch.utils.data.Subset(part.dataset, order)
    return [inputs.numpy() for inputs, _ in ordered_loader(subset, batch_size)]


def check_calibration(source, meta: dict, batches: list[np.ndarray]) -> None:
    """UsageError (exit 2) unless ``batches`` holds at least one image and every batch fits the
    ONNX model ``source``'s input (its metadata's channels and image size)."""
    want = json.loads(meta.get("input", "{}"))
    # an exported detector takes one (C, H, W) image; everything else an (N, C, H, W) batch
    per_image = len(source.graph.input[0].type.tensor_type.shape.dim) == 3
    expected = (want.get("channels"), want.get("image_size"), want.get("image_size"))
    for batch in batches:
        shape = tuple(batch.shape) if per_image else tuple(batch.shape[1:])
        if batch.ndim != (3 if per_image else 4) or shape != expected:
            wanted = expected if per_image else ("N", *expected)
            raise UsageError(f"calibration data of shape {tuple(batch.shape)} does not fit the model's input {wanted}")
    if not batches or sum(1 if per_image else len(b) for b in batches) == 0:
        raise UsageError("the calibration set is empty: give --calibration-images >= 1 and data with training images")


def file_bytes(path: Path) -> int:
    """A file's size; an OpenVINO IR's counts its .bin too."""
    weights = path.with_suffix(".bin") if path.suffix == ".xml" else None
    return path.stat().st_size + (weights.stat().st_size if weights else 0)
