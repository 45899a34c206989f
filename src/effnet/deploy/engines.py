"""Opening a trained file on the engine that will run it: torch (eager, in its inference form)
or ONNX Runtime. ``predict``, ``eval``, ``quantize`` and the compression pipeline go through
``open_model`` and do not know which engine they hold: each engine has a model's interface
(``config``, ``preprocessing``, ``class_names``, ``eval()``, called on an NCHW float batch)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from effnet.core.errors import UsageError
from effnet.deploy.choices import ENGINES
from effnet.deploy.export import export
from effnet.deploy.export import inference_form as export_form
from effnet.deploy.runtime import OnnxModel
from effnet.models.efficientnet import EfficientNet
from effnet.weights.trained import Provenance, Trained, load_trained


def inference_form(model: nn.Module) -> nn.Module:
    """BN folded into the convs and channels_last: 0.7-0.8x the latency of the plain module on
    CPU (benchmarks/README.md). predict and eval both run this form, so they agree."""
    if not isinstance(model, EfficientNet):
        return model  # an engine (ONNX Runtime) runs its own optimised graph
    return export_form(model).to(memory_format=torch.channels_last)


def onnx_engine(model: nn.Module, threads: int | None = None) -> OnnxModel:
    """Serve an in-memory model with ONNX Runtime: export (dynamic batch, checked) and load."""
    with tempfile.TemporaryDirectory(prefix="effnet-onnx-") as scratch:
        result = export(model, Path(scratch) / "model.onnx", dynamic_batch=True)
        return OnnxModel(result.path, threads=threads)


def open_model(weights: str, model: str | None = None, engine: str | None = None, **create_kwargs) -> Trained:
    """``weights`` is a pretrained tag (``lite0``), a weights file or an ``.onnx`` export; files
    without effnet metadata need ``model``. ``engine``: ``torch`` or ``onnxruntime``; by default an
    ``.onnx`` file selects ONNX Runtime and anything else torch. Torch weights run on ONNX
    Runtime are exported on the fly (and checked against eager, as ``effnet export`` does)."""
    is_onnx = str(weights).endswith(".onnx")
    engine = engine or ("onnxruntime" if is_onnx else "torch")
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if is_onnx:
        if engine == "torch":
            raise UsageError(f"--weights {weights} is an ONNX file; it runs with --engine onnxruntime")
        net = OnnxModel(weights)
        if model is not None and model != net.config.name:
            raise UsageError(f"--weights {weights} holds {net.config.name}, not {model}")
        return Trained(net, Provenance.from_training(net.training, str(weights)), str(weights))
    trained = load_trained(weights, model, **create_kwargs)
    if engine == "onnxruntime":
        trained.model = onnx_engine(trained.model)
    return trained
