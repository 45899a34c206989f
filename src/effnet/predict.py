"""Classify image files with a model and the preprocessing that travels with it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from effnet.errors import UsageError
from effnet.images import load_rgb
from effnet.models import EfficientNet


@dataclass
class Prediction:
    image: str
    top: list[dict]  # [{"label", "index", "prob"}], most likely first

    def to_dict(self) -> dict:
        return {"image": self.image, "top": self.top}


ENGINES = ("torch", "onnxruntime")


def load_for_inference(weights: str, model: str | None = None, engine: str | None = None, **create_kwargs):
    """``weights`` is a pretrained tag (``lite0``) or a file; files without effnet metadata need ``model``.

    ``engine``: ``torch`` (eager, in its inference form) or ``onnxruntime``; by default an
    ``.onnx`` file selects ONNX Runtime and anything else torch. Other weights run on ONNX
    Runtime are exported on the fly (and checked against eager, as ``effnet export`` does).
    """
    is_onnx = str(weights).endswith(".onnx")
    engine = engine or ("onnxruntime" if is_onnx else "torch")
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if is_onnx:
        if engine == "torch":
            raise UsageError(f"--weights {weights} is an ONNX file; it runs with --engine onnxruntime")
        from effnet.runtime import OnnxModel

        net = OnnxModel(weights)
        return _same_model(net, weights, model)
    net = _load_torch(weights, model, **create_kwargs)
    if engine == "onnxruntime":
        from effnet.runtime import onnx_engine

        return onnx_engine(net)
    return net


def _load_torch(weights: str, model: str | None, **create_kwargs) -> nn.Module:
    from effnet.pretrained import PRETRAINED, load_pretrained
    from effnet.weights import load

    if weights in PRETRAINED:
        net = load_pretrained(weights)
        return _same_model(net, weights, model)
    if not os.path.exists(weights):
        raise UsageError(f"--weights {weights!r} is neither a file nor a pretrained tag ({', '.join(PRETRAINED)})")
    return load(weights, model=model, **create_kwargs)


def _same_model(net, weights: str, model: str | None):
    if model is not None and model != net.config.name:
        raise UsageError(f"--weights {weights} holds {net.config.name}, not {model}")
    return net


@torch.inference_mode()
def predict(model: nn.Module, paths: list[str], top_k: int = 5) -> tuple[list[Prediction], list[UsageError]]:
    """Top-k classes for every decodable image; undecodable ones are returned as errors,
    so one bad file does not cost the others their results."""
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    from effnet.models.fuse import fuse_batchnorm

    transform = model.preprocessing.transform()
    names = model.class_names
    if isinstance(model, EfficientNet):
        # The inference form: BN folded into the convs and channels_last, 0.7-0.8x the
        # latency of the plain module on CPU (benchmarks/README.md).
        model = fuse_batchnorm(model).to(memory_format=torch.channels_last)
    if isinstance(model, nn.Module):
        model.eval()
    results, errors = [], []
    for path in paths:
        try:
            image = load_rgb(path)
        except UsageError as exc:
            errors.append(exc)
            continue
        batch = transform(image).unsqueeze(0).contiguous(memory_format=torch.channels_last)
        probs = model(batch).softmax(-1)[0]
        values, indices = probs.topk(min(top_k, probs.numel()))
        top = [
            {"label": names[i] if names else str(i), "index": int(i), "prob": float(p)}
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
        results.append(Prediction(image=str(path), top=top))
    return results, errors
