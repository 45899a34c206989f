"""Classify image files with a model and the preprocessing that travels with it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effnet.core.errors import UsageError
from effnet.datasets.images import decode_each
from effnet.deploy.engines import inference_form, open_model


@dataclass
class Prediction:
    image: str
    top: list[dict]  # [{"label", "index", "prob"}], most likely first

    def to_dict(self) -> dict:
        return {"image": self.image, "top": self.top}


def load_for_inference(weights: str, model: str | None = None, engine: str | None = None, **create_kwargs):
    """The model of ``open_model`` (see deploy.engines), without its provenance."""
    return open_model(weights, model, engine, **create_kwargs).model


@torch.inference_mode()
def predict(model: nn.Module, paths: list[str], top_k: int = 5) -> tuple[list[Prediction], list[UsageError]]:
    """Top-k classes for every decodable image; undecodable ones are returned as errors,
    so one bad file does not cost the others their results."""
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    transform = model.preprocessing.transform()
    names = model.class_names
    model = inference_form(model)
    results, errors = [], []
    for path, image in decode_each(paths, errors):
        batch = transform(image).unsqueeze(0).contiguous(memory_format=torch.channels_last)
        probs = model(batch).softmax(-1)[0]
        values, indices = probs.topk(min(top_k, probs.numel()))
        top = [
            {"label": names[i] if names else str(i), "index": int(i), "prob": float(p)}
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
        results.append(Prediction(image=str(path), top=top))
    return results, errors
