"""Post-training int8 quantization with ONNX Runtime's static QDQ quantizer.

The fp32 export (BN folded, checked against eager) is pre-processed (shape inference and
graph cleanup, as ONNX Runtime recommends), then quantized with QuantizeLinear/DequantizeLinear
pairs that ONNX Runtime fuses into integer kernels: weights int8 per output channel (one scale
per filter; depthwise filters differ by orders of magnitude, so a per-tensor scale would zero
most of them), activations uint8 with scales from calibration images.

What makes EfficientNet hard to quantize: SiLU's output (x * sigmoid(x)) is unbounded above but
bounded below by -0.28, and the SE gate multiplies whole feature maps by values in (0, 1).
Both are kept quantized by default; ``keep_fp32`` names op types to leave in float (e.g.
``Sigmoid,Mul`` keeps SiLU and the SE gate in fp32 at the cost of extra conversions).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

from effnet.compress.calibration import calibration_batches, check_calibration, file_bytes
from effnet.compress.choices import CALIBRATION_METHODS as METHODS
from effnet.compress.choices import SCHEMES
from effnet.compress.openvino_int8 import quantize_openvino
from effnet.compress.pt2e import write_int8
from effnet.compress.qat import quantization_aware_finetune
from effnet.core.errors import UsageError, first_line
from effnet.core.extras import require
from effnet.core.fileio import atomic_write
from effnet.deploy.engines import open_exported
from effnet.deploy.evaluate import evaluate
from effnet.deploy.export import export, publish_ir
from effnet.deploy.runtime import onnx_metadata, read_onnx
from effnet.tasks.registry import entry_of, registration, task_of
from effnet.weights.trained import Trained, load_trained, require_model_file


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol: ``get_next()`` returns the next input
    dict, or None when the calibration set is exhausted."""

    def __init__(self, batches, input_name: str):
        self.batches, self.input_name = iter(batches), input_name

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}


def quantize_onnx(
    fp32: str | Path,
    out: str | Path,
    batches: list[np.ndarray],
    *,
    method: str = "minmax",
    keep_fp32: tuple[str, ...] = (),
    quiet: bool = True,
) -> None:
    """Quantize an effnet fp32 ONNX file to int8 QDQ with ``batches`` as calibration data; the
    effnet metadata (classes, preprocessing, input) is carried over."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise UsageError(f"--calibration-method must be one of {', '.join(METHODS)}, got {method!r}")
    source = read_onnx(fp32)
    meta = onnx_metadata(source)
    check_calibration(source, meta, batches)
    input_name = source.graph.input[0].name
    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    with tempfile.TemporaryDirectory(prefix="effnet-quantize-") as scratch:
        pre = Path(scratch) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        excluded = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in keep_fp32]
        tmp = Path(scratch) / "int8.onnx"
        # ONNX Runtime's quantizer logs a root-logger warning per bias it leaves per-tensor (every
        # detector head conv): hundreds of lines that say nothing a user can act on.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            # the histogram calibrators print progress with print(): not onto stdout, where --json goes
            with contextlib.redirect_stdout(sys.stderr if not quiet else io.StringIO()):
                quantize_static(
                    str(pre),
                    str(tmp),
                    _Calibration(batches, input_name),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=calibrate,
                    nodes_to_exclude=excluded,
                )
        except Exception as exc:  # the quantizer raises plain exceptions from deep inside
            raise UsageError(f"{fp32}: ONNX Runtime could not quantize it ({first_line(exc)})") from None
        finally:
            root.setLevel(level)
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(
            proto, {**meta, "quantization": json.dumps({"method": method, "keep_fp32": list(keep_fp32)})}
        )
        atomic_write(Path(out), lambda f: f.write(proto.SerializeToString()))


def quantize(
    weights: str,
    out: str,
    *,
    data: str | None = None,
    calibration_images: int = 256,
    method: str = "minmax",
    keep_fp32: tuple[str, ...] = (),
    seed: int = 0,
    evaluate_split: str | None = "test",
    scheme: str = "ptq",
    qat_epochs: int = 1,
    qat_lr: float = 1e-4,
    limit_train: int | None = None,
    quiet: bool = True,
) -> dict:
    """Export ``weights`` to fp32 ONNX, quantize it to int8 with calibration images from
    ``data`` (default: what it was trained on) and write ``out``. ``scheme="qat"`` first
    fine-tunes with int8 rounding in the loop (``effnet.compress.qat``). With
    ``evaluate_split``, the fp32 export of ``weights`` and the int8 file are evaluated by the same
    code (``effnet eval``'s) and the report compares them."""
    out_path = Path(out)
    formats = {".onnx": "onnx", ".xml": "openvino", ".tflite": "litert", ".pte": "executorch"}
    format = formats.get(out_path.suffix.lower())
    if format is None or out_path.is_dir():
        raise UsageError(f"--out {out}: give an .onnx (ONNX Runtime), .xml (OpenVINO), .tflite (LiteRT) or .pte "
                         "(ExecuTorch) file to write")  # fmt: skip
    if format != "onnx":
        require(format, **({"modules": ("openvino", "nncf")} if format == "openvino" else {}))
        if method != "minmax" or keep_fp32:
            by = "NNCF" if format == "openvino" else "PT2E"
            raise UsageError(f"--calibration-method and --keep-fp32 are ONNX Runtime's; {format} is quantized by "
                             f"{by} with its own observers")  # fmt: skip
    if scheme == "dynamic" and format != "litert":
        raise UsageError("--method dynamic is LiteRT's dynamic-range int8 (an --out .tflite file)")
    require_model_file(weights)
    if calibration_images < 1:
        raise UsageError(f"--calibration-images must be at least 1, got {calibration_images}")
    if scheme not in SCHEMES:
        raise UsageError(f"--method must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    trained = load_trained(weights)
    model = trained.model
    entry, task = entry_of(model), task_of(model)
    if format != "onnx" and entry.per_image:
        raise UsageError(f"{weights} holds a {task} model, which exports to ONNX only")
    if format == "openvino" and scheme != "ptq":
        raise UsageError(f"--method {scheme}: an OpenVINO int8 IR is post-training quantized (--method ptq)")
    if task != "classification" and scheme == "qat":
        raise UsageError(f"--method {scheme}: quantization-aware fine-tuning is for classifiers; {weights} holds a "
                         f"{task} model (use --method ptq)")  # fmt: skip
    options = trained.provenance.data_options(data, origin=weights)
    # what it was trained on travels into the exports, so eval of them needs no --data
    provenance = {"training": json.dumps(trained.provenance.training)} if trained.provenance.training else None
    batches = []
    if scheme != "dynamic":
        training = trained.provenance.training
        batches = calibration_batches(model, options, calibration_images, seed=seed, training=training)
    suffix = out_path.suffix.lower()
    with tempfile.TemporaryDirectory(prefix="effnet-quantize-") as scratch:

        def export_fp32(net, name: str) -> Path:
            path = Path(scratch) / name
            # a detector's graph runs one image at a time; the others take any batch (the mobile
            # formats: batch 1, as on the device). OpenVINO's int8 starts from the ONNX export.
            dynamic = format in ("onnx", "openvino") and not entry.per_image
            as_format = "onnx" if format == "openvino" else format
            export(net, path, format=as_format, dynamic_batch=dynamic, extra_metadata=provenance)
            return path

        fp32 = export_fp32(model, "fp32.onnx" if format == "openvino" else f"fp32{suffix}")
        tuned = model
        if scheme == "qat":
            tuned = quantization_aware_finetune(
                model, options, epochs=qat_epochs, lr=qat_lr, limit_train=limit_train, seed=seed, quiet=quiet
            )
        int8 = Path(scratch) / f"int8{suffix}"
        if format == "onnx":
            source = export_fp32(tuned, "qat-fp32.onnx") if scheme == "qat" else fp32
            quantize_onnx(source, int8, batches, method=method, keep_fp32=keep_fp32, quiet=quiet)
        elif format == "openvino":
            quantize_openvino(fp32, int8, batches, quiet=quiet)
        else:
            write_int8(tuned, int8, format, batches, dynamic=scheme == "dynamic", extra_metadata=provenance)
        report = {
            "format": format,
            "scheme": scheme,
            **({"qat_epochs": qat_epochs, "qat_lr": qat_lr} if scheme == "qat" else {}),
            "method": {"onnx": method, "openvino": "nncf"}.get(format, "pt2e"),
            "calibration_images": len(batches) if entry.per_image else sum(len(b) for b in batches),
            "fp32_bytes": fp32.stat().st_size,
            "int8_bytes": file_bytes(int8),
        }
        report["size_ratio"] = report["int8_bytes"] / report["fp32_bytes"]
        if evaluate_split:
            report["metric"] = registration(task).metric
            for name, path in (("fp32", fp32), ("int8", int8)):
                opened = Trained(open_exported(path), trained.provenance, str(weights))
                report[f"{name}_score"] = evaluate(opened, data, split=evaluate_split)["score"]
            report["score_drop"] = report["fp32_score"] - report["int8_score"]
        if format == "openvino":
            publish_ir(int8, out_path)
        else:
            atomic_write(out_path, lambda f: f.write(int8.read_bytes()))
    return report
