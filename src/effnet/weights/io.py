"""Reading and writing weights safely.

Our format is safetensors: tensors plus string metadata (config, class names,
preprocessing), so ``load(path)`` needs nothing else. Pickle-based ``.pth``/``.pt`` files are
read only with ``torch.load(weights_only=True)``; a file that needs arbitrary code to load is
refused, never retried unsafely.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from effnet.core.errors import UsageError, WeightsError, first_line
from effnet.core.fileio import atomic_write
from effnet.models.config import ModelConfig
from effnet.models.flops import count_params
from effnet.models.preprocessing import Preprocessing
from effnet.models.registry import build_model, create_model, get_entry
from effnet.models.task_models import build_task_model, count_task_params, task_config
from effnet.weights.convert import convert_state_dict, detect_source, unwrap_state_dict

FORMAT_VERSION = "1"
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def model_metadata(model: nn.Module, preprocessing: Preprocessing | None = None) -> dict[str, str]:
    """What rebuilds ``model`` with no other input, as strings: safetensors and ONNX files both
    carry it (``preprocessing`` overrides the model's, for an export at another size)."""
    config: ModelConfig = model.config
    task = getattr(model, "task", None)
    task = None if task == "classification" else task  # the default: a file without a task is a classifier
    return {
        "format": "effnet",
        "format_version": FORMAT_VERSION,
        **({"task": task} if task else {}),
        "model_name": config.name,
        "config": json.dumps(config.to_dict()),
        "preprocessing": json.dumps((preprocessing or model.preprocessing).to_dict()),
        "class_names": json.dumps(model.class_names),
    }


def parse_metadata(metadata: dict[str, str], path) -> tuple[ModelConfig, Preprocessing, list[str] | None]:
    """The inverse of :func:`model_metadata`, with a clear error for damaged metadata. The config
    is a ``ModelConfig`` for classifiers, the task model's config for the other tasks."""
    try:
        task = metadata.get("task")
        raw = json.loads(metadata["config"])
        config = task_config(task, raw) if task else ModelConfig.from_dict(raw)
        preprocessing = Preprocessing.from_dict(json.loads(metadata["preprocessing"]))
        names = json.loads(metadata.get("class_names", "null"))
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ValueError(f"class_names must be a list of strings, got {type(names).__name__}")
        if names is not None and len(names) != config.num_classes:
            raise ValueError(f"{len(names)} class_names for {config.num_classes} classes")
    except (KeyError, ValueError, TypeError, UsageError) as exc:
        raise WeightsError(f"{path}: effnet metadata is damaged ({first_line(exc)})") from None
    return config, preprocessing, names


def save(model: nn.Module, path: str | os.PathLike, extra_metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` as safetensors with everything ``load`` needs. Atomic: the file appears
    complete or not at all. Deterministic: the same model gives the same bytes."""
    path = Path(path)
    metadata = {**model_metadata(model), **(extra_metadata or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda f: f.write(safetensors_bytes(tensors, metadata)))
    return path


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors' serialisation with its JSON header written again with sorted keys: the
    library keeps the metadata in a hash map whose order changes from one call to the next, so
    the same model would otherwise give files with different checksums. The tensor data (laid
    out by dtype and name) and each tensor's offsets are kept as they are."""
    from safetensors.torch import save as to_bytes

    raw = to_bytes(tensors, metadata=metadata)
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors pads it
    return len(text).to_bytes(8, "little") + text + raw[8 + size :]


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None


def tensor_elements(path: str | os.PathLike) -> int:
    """How many numbers a safetensors file holds, read from its header without loading them."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())


def check_size(config: ModelConfig, path: str | os.PathLike) -> None:
    """The metadata's architecture must be what the file's tensors can fill: parameters are
    counted on the meta device (no memory), so a 7 MB file that claims a 19-billion-parameter
    model is refused before 76 GB are allocated for it."""
    wanted = count_params(config) if isinstance(config, ModelConfig) else count_task_params(config)
    held = tensor_elements(path)
    if wanted > held:
        raise WeightsError(
            f"{path}: its metadata describes a model of {wanted:,} parameters but the file holds only "
            f"{held:,} numbers; the metadata is damaged or does not belong to these weights"
        )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors or pickle checkpoint, loading nothing but tensors."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    if path.suffix not in PICKLE_SUFFIXES:
        raise WeightsError(f"{path}: unknown weights format; expected .safetensors or one of {PICKLE_SUFFIXES}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path}: refused, the file needs arbitrary Python code to load ({first_line(exc)}). "
            "Only plain tensors are read; re-save it as a state_dict or with effnet.save()."
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None
    try:
        return unwrap_state_dict(obj)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}") from None


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], origin: str = "checkpoint") -> nn.Module:
    """``load_state_dict(strict=True)`` with an error that names the keys that do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise WeightsError(
            f"{origin} does not match {name}; " + "; ".join(problems) + _generation_hint(own, state_dict)
        )
    model.load_state_dict(state_dict, strict=True)
    return model


def _generation_hint(own: dict, theirs: dict) -> str:
    """V1 and V2 weights fail on dozens of keys; say the one thing that is wrong."""

    def v2(keys) -> bool:
        return any(".fused_conv." in k for k in keys)

    if v2(theirs) and not v2(own):
        return ". These are EfficientNetV2 weights (Fused-MBConv blocks): load them with an efficientnetv2_* model"
    if v2(own) and not v2(theirs) and any(".dw_conv." in k for k in theirs):
        return ". These are EfficientNet (V1) weights: load them with an efficientnet_* model, not a V2"
    return ""


def load(
    path: str | os.PathLike,
    *,
    model: str | None = None,
    source: str | None = None,
    class_names: list[str] | None = None,
    **create_kwargs,
) -> nn.Module:
    """Rebuild a model from a weights file.

    An effnet safetensors file needs nothing else. Other checkpoints (a peer's, or plain
    state dicts) need ``model`` (a registry name) plus whatever the weights were trained with
    (``bn_eps``, ``padding``, ``num_classes``); their keys are converted from ``source``
    (detected when omitted). The model is returned in eval mode.
    """
    if model is not None:
        get_entry(model)  # an unknown name is reported before any file is read
    path = Path(path)
    metadata = read_metadata(path) if path.suffix == ".safetensors" and path.is_file() else {}
    state_dict = read_state_dict(path)
    if metadata.get("format") == "effnet":
        config, preprocessing, names = parse_metadata(metadata, path)
        if model is not None and model != config.name:  # the file's own config decides; say so
            raise UsageError(f"--weights {path} holds {config.name}, not {model}")
        check_size(config, path)  # before building: crafted metadata could ask for a huge model
        if metadata.get("task") is None:  # a plain classifier
            net = build_model(config, class_names=names, preprocessing=preprocessing)
        else:
            net = build_task_model(config, names, task=metadata["task"])
            net.preprocessing = preprocessing
        return load_weights(net, state_dict, origin=str(path)).eval()
    if model is None:
        raise UsageError(f"{path} carries no effnet metadata; say which model it holds (model=/--model)")
    try:
        source = source or detect_source(state_dict)
        converted = convert_state_dict(state_dict, source)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    if "classifier.weight" in converted and "num_classes" not in create_kwargs:
        create_kwargs["num_classes"] = converted["classifier.weight"].shape[0]
    net = create_model(model, class_names=class_names, **create_kwargs)
    return load_weights(net, converted, origin=f"{path} ({source} weights)").eval()
