"""Opening a trained file on the engine that will run it: torch (eager, in its inference form),
ONNX Runtime, OpenVINO, LiteRT or ExecuTorch. ``predict``, ``eval``, ``quantize`` and the
compression pipeline go through ``open_model`` and do not know which engine they hold: each
engine has a model's interface (``config``, ``preprocessing``, ``class_names``, ``eval()``, called
on an NCHW float batch)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from effnet.core.errors import UsageError
from effnet.deploy.choices import ENGINE_BY_SUFFIX, ENGINES, MOBILE_FORMATS
from effnet.deploy.export import export
from effnet.deploy.export import inference_form as export_form
from effnet.deploy.litert import LiteRTModel
from effnet.deploy.openvino import OpenVinoModel
from effnet.deploy.pte import ExecuTorchModel
from effnet.deploy.runtime import OnnxModel
from effnet.models.efficientnet import EfficientNet
from effnet.tasks.registry import entry_of, task_of
from effnet.weights.trained import Provenance, Trained, load_trained


def inference_form(model: nn.Module) -> nn.Module:
    """BN folded into the convs and channels_last: 0.7-0.8x the latency of the plain module on
    CPU (benchmarks/README.md). predict and eval both run this form, so they agree."""
    if not isinstance(model, EfficientNet):
        return model  # an engine (ONNX Runtime) runs its own optimised graph
    return export_form(model).to(memory_format=torch.channels_last)


def onnx_engine(model: nn.Module, threads: int | None = None) -> OnnxModel:
    """Serve an in-memory model with ONNX Runtime: export (dynamic batch, checked) and load. A
    detector's graph runs one image at a time, whatever its size."""
    with tempfile.TemporaryDirectory(prefix="effnet-onnx-") as scratch:
        result = export(model, Path(scratch) / "model.onnx", dynamic_batch=not entry_of(model).per_image)
        return OnnxModel(result.path, threads=threads)


def openvino_engine(model: nn.Module, **options) -> OpenVinoModel:
    """Serve an in-memory model with OpenVINO: export to IR (dynamic batch, checked) and compile."""
    with tempfile.TemporaryDirectory(prefix="effnet-openvino-") as scratch:
        result = export(model, Path(scratch) / "model.xml", format="openvino", dynamic_batch=True)
        return OpenVinoModel(result.path, **options)


def mobile_engine(model: nn.Module, format: str, threads: int | None = None) -> LiteRTModel | ExecuTorchModel:
    """Serve an in-memory model with LiteRT or ExecuTorch: export (batch 1, checked) and load.
    Larger batches run one image at a time, as on the device."""
    if entry_of(model).per_image:
        raise UsageError(f"a {task_of(model)} model exports to ONNX only; --engine {format} cannot run it")
    suffix = {"litert": ".tflite", "executorch": ".pte"}[format]
    with tempfile.TemporaryDirectory(prefix=f"effnet-{format}-") as scratch:
        result = export(model, Path(scratch) / f"model{suffix}", format=format)
        return (LiteRTModel if format == "litert" else ExecuTorchModel)(result.path, threads=threads)


def engine_for(weights: str, engine: str | None) -> str:
    """The engine that runs ``weights``: ``engine`` if given, else by the file's kind (``.onnx``:
    ONNX Runtime, ``.xml``: OpenVINO, ``.tflite``: LiteRT, ``.pte``: ExecuTorch, anything else:
    torch)."""
    suffix = Path(str(weights)).suffix.lower()
    engine = engine or ENGINE_BY_SUFFIX.get(suffix, "torch")
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if suffix == ".onnx" and engine not in ("onnxruntime", "openvino"):
        raise UsageError(f"--weights {weights} is an ONNX file; it runs with --engine onnxruntime or openvino")
    if suffix in (".xml", ".tflite", ".pte") and engine != ENGINE_BY_SUFFIX[suffix]:
        kind = {".xml": "an OpenVINO IR", ".tflite": "a LiteRT file", ".pte": "an ExecuTorch program"}[suffix]
        raise UsageError(f"--weights {weights} is {kind}; it runs with --engine {ENGINE_BY_SUFFIX[suffix]}")
    return engine


def open_exported(path: str | os.PathLike, engine: str | None = None, *, threads: int | None = None,
                  model: str | None = None, **ov_options):  # fmt: skip
    """An exported file on its engine (default: by its suffix, ``engine_for``); ``model`` names
    the architecture of a mobile file without effnet metadata."""
    engine = engine_for(str(path), engine)
    if engine == "openvino":
        return OpenVinoModel(path, threads, **ov_options)
    if engine == "litert":
        return LiteRTModel(path, threads=threads, model=model)
    if engine == "executorch":
        return ExecuTorchModel(path, threads=threads, model=model)
    return OnnxModel(path, threads=threads)


def open_model(
    weights: str, model: str | None = None, engine: str | None = None, *, threads: int | None = None,
    hint: str = "latency", precision: str = "f32", cache_dir: str | None = None, **create_kwargs,
) -> Trained:  # fmt: skip
    """A model of any task and its provenance: the one way every command opens a model.

    ``weights`` is a pretrained tag (``lite0``), a weights file, an ``.onnx`` export, an
    OpenVINO ``.xml``, a LiteRT ``.tflite`` or an ExecuTorch ``.pte``; files without effnet
    metadata need ``model``. ``engine``: ``torch``, ``onnxruntime``, ``openvino``, ``litert`` or
    ``executorch`` (default: by the file's kind, ``engine_for``). Torch weights
    run on an exported engine are exported on the fly (and checked against eager, as
    ``effnet export`` does). ``threads`` applies to both runtimes; ``hint``, ``precision`` and
    ``cache_dir`` are OpenVINO's (``effnet.deploy.openvino``)."""
    engine = engine_for(weights, engine)
    exported = Path(str(weights)).suffix.lower() in ENGINE_BY_SUFFIX
    ov_options = {"hint": hint, "precision": precision, "cache_dir": cache_dir}
    if exported:
        net = open_exported(weights, engine, threads=threads, model=model, **ov_options)
        if model is not None and model != net.config.name:
            raise UsageError(f"--weights {weights} holds {net.config.name}, not {model}")
        return Trained(net, Provenance.from_training(net.training, str(weights)), str(weights))
    trained = load_trained(weights, model, **create_kwargs)
    if engine == "onnxruntime":
        trained.model = onnx_engine(trained.model, threads)
    elif engine == "openvino":
        trained.model = openvino_engine(trained.model, threads=threads, **ov_options)
    elif engine in MOBILE_FORMATS:
        trained.model = mobile_engine(trained.model, engine, threads)
    return trained


def open(path_or_tag: str | os.PathLike, *, engine: str | None = None, model: str | None = None, **options):
    """Open a pretrained tag, an effnet ``.safetensors`` file, a peer's checkpoint (``model=``
    names its architecture), an ``.onnx`` export, an OpenVINO ``.xml``, a LiteRT ``.tflite`` or an
    ExecuTorch ``.pte`` on ``engine`` (default: by the file's kind). Whatever the task and the
    engine, the result has ``task``, ``class_names``, ``preprocessing``, ``config`` and
    ``provenance`` (what it was trained on), and is called as the torch model is: an NCHW batch (a
    detector: a list of images)."""
    trained = open_model(str(path_or_tag), model, engine, **options)
    net = trained.model
    if not hasattr(net, "task"):
        net.task = task_of(net)
    net.provenance = trained.provenance
    return net
