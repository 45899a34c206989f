"""Export the inference form of a model to ONNX, OpenVINO IR, TorchScript, LiteRT (.tflite) or
ExecuTorch (.pte), checked against eager.

What is exported is what serves best: BatchNorm folded into the convolutions, PyTorch's
native SiLU (no custom autograd function can end up in the graph), and a fixed image size,
so TensorFlow-style SAME padding becomes a constant Pad. The file carries the model's
metadata (name, config, classes, preprocessing), so it alone is enough to serve.

A file is written to a scratch directory, run once against the eager model, and only then
written atomically to its place; a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from effnet.core.errors import UsageError, first_line
from effnet.core.extras import require
from effnet.core.fileio import atomic_write
from effnet.deploy.choices import DEFAULT_OPSET, FORMAT_SUFFIXES, FORMATS, MOBILE_FORMATS
from effnet.deploy.detector_export import export_detector, inference_form, letterboxed
from effnet.deploy.export_checks import TOLERANCE, ExportError, ExportResult, blocks_image  # noqa: F401 - their home for callers
from effnet.deploy.litert import LiteRTModel, write_tflite
from effnet.deploy.openvino import OpenVinoModel, publish_ir, write_ir  # noqa: F401 - publish_ir: callers import it here
from effnet.deploy.pte import ExecuTorchModel, write_pte
from effnet.deploy.runtime import OnnxModel
from effnet.tasks.registry import entry_of, task_of
from effnet.weights.io import model_metadata

METADATA_FILE = "effnet.json"  # TorchScript's extra file holding the metadata


def input_spec(model: nn.Module) -> tuple[int, int]:
    """(channels, default side) of the images a model of any task takes."""
    return entry_of(model).input_size(model.config)


def export_metadata(
    model: nn.Module, image_size: int, batch_size: int | None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """A safetensors file's metadata, plus the input the graph accepts (and ``extra``, e.g. the
    ``training`` provenance of the file the model came from)."""
    preprocessing = model.preprocessing
    if image_size != preprocessing.resolution:
        # Keep the resize/crop ratio of the model's own preprocessing at the new size.
        resize = round(image_size * preprocessing.resize / preprocessing.resolution)
        preprocessing = replace(preprocessing, resolution=image_size, resize=resize)
    return {
        **model_metadata(model, preprocessing),
        "input": json.dumps(
            {"name": "image", "channels": input_spec(model)[0], "image_size": image_size, "batch_size": batch_size}
        ),
        **(extra or {}),
    }


def format_for(path: str | os.PathLike) -> str:
    """The format a file name asks for by its suffix; one with another suffix needs --format."""
    suffix = Path(path).suffix.lower()
    for format, suffixes in FORMAT_SUFFIXES.items():
        if suffix in suffixes:
            return format
    if Path(path).is_dir():
        raise UsageError(f"--out {path} is a directory; give a file name")
    accepted = ", ".join(s for suffixes in FORMAT_SUFFIXES.values() for s in suffixes)
    raise UsageError(f"--out {path}: the suffix {suffix or '(none)'} names no format; give a {accepted} file "
                     f"or --format {'|'.join(FORMATS)}")  # fmt: skip


def export(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    format: str | None = None,
    image_size: int | None = None,
    batch_size: int = 1,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    extra_metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Export ``model`` to ``path`` and check it against eager on one input; ``extra_metadata``
    joins the model's (``effnet export`` passes the weights file's ``training`` provenance).
    ``format`` defaults to the one ``path``'s suffix names (.onnx, .xml, .pt, .tflite, .pte)."""
    format = format_for(path) if format is None else format
    if format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format in ("onnx", "openvino"):
        require("deploy", *(("openvino",) if format == "openvino" else ()))
    if format in MOBILE_FORMATS:
        require(format)
        if dynamic_batch:
            raise UsageError(f"--format {format} exports a fixed batch (--batch-size); --dynamic-batch is for ONNX "
                             "and OpenVINO")  # fmt: skip
    suffix = Path(path).suffix.lower()
    for other, suffixes in FORMAT_SUFFIXES.items():
        if other != format and suffix in suffixes:
            raise UsageError(f"--out {path} names a {other} file but --format is {format}")
    if format == "openvino" and suffix != ".xml":
        raise UsageError(f"--out {path}: an OpenVINO IR is an .xml file (its weights go to the .bin beside it)")
    if format in ("onnx", "openvino"):
        import onnx

        newest = onnx.defs.onnx_opset_version()
        if not 7 <= opset <= newest:
            raise UsageError(f"--opset {opset} is out of range: this onnx writes opsets 7..{newest}")
    channels, default_size = input_spec(model)
    image_size = default_size if image_size is None else image_size
    if not 16 <= image_size <= 4096:
        raise UsageError(f"--image-size {image_size} is out of range (16..4096)")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--out {path} is a directory; give a file name")
    if entry_of(model).per_image:
        formats = ("onnx", "openvino") if letterboxed(model) else ("onnx",)
        if format not in formats or dynamic_batch or batch_size != 1:
            raise UsageError(f"a {task_of(model)} model exports to {' or '.join(formats)} with one image per run (no "
                             f"--format {format}, --dynamic-batch or --batch-size)")  # fmt: skip
        metadata = export_metadata(model, image_size, 1, extra_metadata)
        return export_detector(model, path, image_size, opset, metadata, format=format)
    net = inference_form(model)
    example = torch.randn(batch_size, channels, image_size, image_size)
    metadata = export_metadata(model, image_size, None if dynamic_batch else batch_size, extra_metadata)

    with tempfile.TemporaryDirectory(prefix="effnet-export-") as scratch:
        tmp = Path(scratch) / path.name
        if format == "onnx":
            _write_onnx(net, example, tmp, metadata, dynamic_batch, opset)
        elif format == "openvino":
            # OpenVINO converts our checked ONNX graph; the IR is checked against eager in turn
            _write_onnx(net, example, Path(scratch) / "model.onnx", metadata, dynamic_batch, opset)
            write_ir(Path(scratch) / "model.onnx", tmp, metadata)
        elif format == "litert":
            write_tflite(net, example, tmp, metadata)
        elif format == "executorch":
            write_pte(net, example, tmp, metadata)
        else:
            _write_torchscript(net, example, tmp, metadata)
        # Check on a batch size other than the example's when the batch is dynamic, so a
        # batch dimension that was baked in after all is caught.
        check = check_batch(model, batch_size + 1 if dynamic_batch else batch_size, channels, image_size)
        with torch.no_grad():
            expected = model.eval()(check)
        got = run_exported(tmp, format, check)
        diff = (got - expected).abs().max().item()
        scale = expected.abs().max().item()
        if not diff <= TOLERANCE * max(scale, 1e-12):
            raise ExportError(
                f"{path}: the exported {format} graph differs from the eager model by {diff:.3g} "
                f"(output scale {scale:.3g}, allowed {TOLERANCE:g} of it); nothing was written"
            )
        if format == "openvino":
            publish_ir(tmp, path)
        else:
            atomic_write(path, lambda f: f.write(tmp.read_bytes()))
    return ExportResult(path, format, image_size, None if dynamic_batch else batch_size, diff, scale)


def check_batch(model: nn.Module, n: int, channels: int, side: int) -> torch.Tensor:
    """``n`` image-like inputs as the model sees them: blocks normalised by its preprocessing.

    Not ``torch.randn``: on white noise a trained model's activations grow so large that float32
    itself loses ~1e-3 of the output (B0 trained 2 epochs on digits: eager float32 against float64
    differs by 1.2e-3 of the output scale on randn, 5e-7 on real digits), and the check refused
    correct graphs of real models. A wrong graph is off by far more on images too."""
    images = torch.stack([blocks_image(side, seed=i, channels=channels) for i in range(n)])
    mean, std = model.preprocessing.mean, model.preprocessing.std
    if len(mean) == channels:
        images = (images - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return images


def onnx_program(net: nn.Module, example: torch.Tensor, *, dynamic_batch: bool, opset: int | None = None):
    """torch.onnx's exporter (``torch.export`` based, optimised, one file) as effnet calls it, for
    our models and, in ``effnet bench``, for torchvision's; ``opset=None``: the exporter's default."""
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter narrates its own progress
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            opset_version=opset,
            dynamic_shapes=dynamic_shapes,
            input_names=["image"],
            output_names=["logits"],
            external_data=False,
            optimize=True,
            verbose=False,
        )
    return program.model_proto


def _write_onnx(net, example, path, metadata, dynamic_batch, opset) -> None:
    import onnx

    # Lower opsets are converted by _at_opset after our rewrite; the exporter's own
    # down-conversion fails on ReduceMean and prints its traceback.
    proto = onnx_program(net, example, dynamic_batch=dynamic_batch, opset=max(opset, DEFAULT_OPSET))
    _global_pools(proto)
    _strip_provenance(proto)
    proto = _at_opset(proto, opset)
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    Path(path).write_bytes(proto.SerializeToString())


def _strip_provenance(proto) -> None:
    """Drop the exporter's per-node provenance (module path, FX node, Python stack trace): it
    names files on the machine that exported, and it is a tenth of an int8 file's size."""
    for node in proto.graph.node:
        del node.metadata_props[:]


def _opset_of(proto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _at_opset(proto, opset: int):
    """torch.onnx's exporter emits opset 18+ and converts down on its own only sometimes (it fails
    on ReduceMean's axes, which our GlobalAveragePool rewrite has removed by now): convert here."""
    import onnx
    from onnx import version_converter

    if _opset_of(proto) == opset:
        return proto
    try:
        converted = version_converter.convert_version(proto, opset)
        onnx.checker.check_model(converted)
    except Exception as exc:  # the converter raises bare RuntimeErrors from C++
        raise UsageError(f"--opset {opset}: the graph cannot be expressed at that opset ({first_line(exc)})") from None
    return converted


def _global_pools(proto) -> int:
    """Rewrite ``ReduceMean(x, axes=[2, 3], keepdims=1)`` (the SE squeeze and the head's pool, as
    the exporter emits them) as ``GlobalAveragePool``: the same numbers, but ONNX Runtime runs
    GlobalAveragePool in its blocked NCHWc layout, while ReduceMean makes it convert the whole
    activation back to NCHW and the pooled result forward again in every block."""
    from onnx import helper, numpy_helper

    initializers = {t.name: t for t in proto.graph.initializer}
    rewritten = 0
    for index, node in enumerate(list(proto.graph.node)):
        if node.op_type != "ReduceMean" or len(node.input) != 2 or node.input[1] not in initializers:
            continue
        keepdims = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        axes = {int(a) % 4 for a in numpy_helper.to_array(initializers[node.input[1]]).ravel()}
        if keepdims != 1 or axes != {2, 3}:
            continue
        pool = helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=f"{node.name}_gap")
        proto.graph.node.remove(node)
        proto.graph.node.insert(index, pool)
        rewritten += 1
    used = {i for n in proto.graph.node for i in n.input}
    for name in [n for n in initializers if n not in used]:
        proto.graph.initializer.remove(initializers[name])
    return rewritten


def _write_torchscript(net, example, path, metadata) -> None:
    # TorchScript is deprecated upstream in favour of torch.export, but LibTorch deployments
    # still load it; tracing is exact here because the inference form has no control flow.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, example)
        torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})


def run_exported(path: str | os.PathLike, format: str, x: torch.Tensor) -> torch.Tensor:
    if format == "onnx":
        return OnnxModel(path)(x)
    if format == "openvino":
        return OpenVinoModel(path)(x)
    if format == "litert":
        return LiteRTModel(path)(x)
    if format == "executorch":
        return ExecuTorchModel(path)(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path))
    with torch.no_grad():
        return module(x)
