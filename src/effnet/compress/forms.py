"""One trained classifier in every precision this CPU can run it in, side by side: fp32 on ONNX
Runtime and OpenVINO, bf16 on OpenVINO (where the CPU has bf16 units), int8 as ONNX Runtime's QDQ
file and as NNCF's OpenVINO IR (what ``effnet quantize`` writes for ``.onnx`` and ``.xml``).

Each form is scored on the same images of a named split (top-1 against the labels, and top-1
agreement with the fp32 eager model, which is what a reduced precision can lose), and timed in one
interleaved rotation per batch size (``effnet.deploy.bench.time_interleaved``), so the speed
ratios and the accuracy come from one process and one set of files. ``effnet bench --weights``
prints it.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from effnet.compress.calibration import calibration_batches, file_bytes
from effnet.compress.openvino_int8 import quantize_openvino
from effnet.compress.quantize import quantize_onnx
from effnet.core.errors import UsageError
from effnet.core.extras import require
from effnet.core.machine import cpu_has_bf16, machine
from effnet.datasets.loading import ordered_loader
from effnet.deploy.bench import time_interleaved
from effnet.deploy.engines import inference_form
from effnet.deploy.export import export
from effnet.deploy.openvino import OpenVinoModel
from effnet.deploy.runtime import OnnxModel
from effnet.tasks.registry import entry_of, task_of
from effnet.weights.trained import load_trained, require_model_file

# (name, precision, engine) in the order the table shows them; the first is the speed reference
FORMS = (
    ("fp32_onnxruntime", "fp32", "onnxruntime"),
    ("fp32_openvino", "fp32", "openvino"),
    ("bf16_openvino", "bf16", "openvino"),
    ("int8_onnxruntime", "int8", "onnxruntime"),
    ("int8_openvino", "int8", "openvino"),
)
REFERENCE = FORMS[0][0]
CONFIDENT = 0.5  # fp32 top-1 probability from which an input counts as confident


@dataclass
class FormRow:
    form: str
    precision: str
    engine: str
    top1: float | None  # None: inputs without labels
    agreement: float  # share of images whose top-1 class equals the fp32 eager model's
    # the same among the images the fp32 model is confident about (top-1 probability >= 0.5):
    # reduced precision flips near-ties first, and a set of ambiguous inputs is mostly near-ties
    agreement_confident: float | None
    file_bytes: int
    median_ms: dict[int, float] = field(default_factory=dict)  # by batch size
    images_per_s: dict[int, float] = field(default_factory=dict)
    vs_fp32: dict[int, float] = field(default_factory=dict)  # median / fp32 ONNX Runtime's, same rotation

    def to_dict(self) -> dict:
        return asdict(self)


def compare_forms(
    weights: str,
    data: str | None = None,
    *,
    split: str = "test",
    limit: int = 1000,
    batch_sizes: tuple[int, ...] = (1, 32),
    threads: int | None = None,
    ov_hint: str = "latency",
    calibration_images: int = 256,
    min_seconds: float = 2.0,
    min_runs: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """fp32, bf16 and int8 forms of the classifier in ``weights``: top-1 and agreement with fp32
    eager on the first ``limit`` images of ``split``, and median latency per batch size."""
    require("deploy")
    require("openvino", modules=("openvino", "nncf"))
    require_model_file(weights)
    if limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    if not batch_sizes or min(batch_sizes) < 1:
        raise UsageError(f"--batch-sizes must be positive integers, got {list(batch_sizes)}")
    trained = load_trained(weights)
    model = trained.model
    if task_of(model) != "classification":
        raise UsageError(f"{weights} holds a {task_of(model)} model; bench --weights compares classifiers")
    options = trained.provenance.data_options(data, origin=weights)
    part = entry_of(model).eval_data(model, options, split, trained.provenance.training, origin=weights)
    subset = torch.utils.data.Subset(part.dataset, range(min(limit, len(part.dataset))))
    inputs, targets = (torch.cat(t) for t in zip(*ordered_loader(subset, 128), strict=True))
    batches = calibration_batches(model, options, calibration_images, seed=seed, training=trained.provenance.training)
    timing = {"min_seconds": min_seconds, "min_runs": min_runs, "progress": progress}
    result = compare_model_forms(model, inputs, targets, batches, batch_sizes=batch_sizes, threads=threads,
                                 ov_hint=ov_hint, **timing)  # fmt: skip
    return {"weights": str(weights), "split": split, **result}


def compare_model_forms(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | None,
    batches: list[np.ndarray],
    *,
    batch_sizes: tuple[int, ...] = (1, 32),
    threads: int | None = None,
    ov_hint: str = "latency",
    min_seconds: float = 2.0,
    min_runs: int = 10,
    progress: bool = False,
    others: dict | None = None,
) -> dict:
    """``compare_forms`` on a model and preprocessed ``inputs`` (top-1 against ``targets`` when
    given), int8 calibrated on ``batches``; ``others`` (name -> callable on a batch) join the
    timed rotation, e.g. a peer's export to compare against."""
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    with torch.inference_mode():
        eager = inference_form(model).eval()
        probabilities = torch.cat([eager(chunk) for chunk in inputs.split(128)]).softmax(1)
    reference = probabilities.argmax(1)
    confident = probabilities.amax(1) >= CONFIDENT
    forms = [f for f in FORMS if f[1] != "bf16" or cpu_has_bf16()]  # OpenVINO would run bf16 as f32
    rows, engines = [], {}
    with tempfile.TemporaryDirectory(prefix="effnet-forms-") as scratch:
        files = _write_forms(model, Path(scratch), batches)
        for name, precision, engine in forms:
            path = files[precision if precision == "int8" else "fp32"][engine]
            if engine == "onnxruntime":
                opened = OnnxModel(path, threads=threads)
            else:
                opened = OpenVinoModel(path, threads, hint=ov_hint, precision="bf16" if precision == "bf16" else "f32")
            with torch.inference_mode():
                predicted = torch.cat([opened(chunk) for chunk in inputs.split(128)]).argmax(1)
            top1 = None if targets is None else (predicted == targets).float().mean().item()
            same = predicted == reference
            rows.append(FormRow(name, precision, engine, top1=top1, agreement=same.float().mean().item(),
                                agreement_confident=same[confident].float().mean().item() if confident.any() else None,
                                file_bytes=file_bytes(path)))  # fmt: skip
            engines[name] = opened
        others = others or {}
        timings: dict[str, dict[int, float]] = {name: {} for name in others}
        for batch in batch_sizes:
            x = inputs[torch.arange(batch) % len(inputs)]  # real images, repeated if there are fewer
            times = time_interleaved({**engines, **others}, x, warmup=3, min_runs=min_runs, min_seconds=min_seconds,
                                     progress=progress, label=f"batch {batch}")  # fmt: skip
            medians = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            for row in rows:
                row.median_ms[batch] = medians[row.form]
                row.images_per_s[batch] = batch / medians[row.form] * 1e3
                row.vs_fp32[batch] = medians[row.form] / medians[REFERENCE]
            for name in others:
                timings[name][batch] = medians[name]
    return {
        "images": len(inputs),
        "threads": threads,
        "ov_hint": ov_hint,
        "calibration_images": sum(len(b) for b in batches),
        "confident_images": int(confident.sum()),
        "machine": machine(),
        "rows": [r.to_dict() for r in rows],
        **({"others_median_ms": timings} if others else {}),
    }


def _write_forms(model, scratch: Path, batches: list[np.ndarray]) -> dict[str, dict[str, Path]]:
    """The fp32 export (ONNX, and its OpenVINO IR) and both int8 files, from one calibration set."""
    fp32 = export(model, scratch / "fp32.onnx", dynamic_batch=True).path
    ir = export(model, scratch / "fp32.xml", format="openvino", dynamic_batch=True).path
    quantize_onnx(fp32, scratch / "int8.onnx", batches)
    quantize_openvino(fp32, scratch / "int8.xml", batches)
    return {
        "fp32": {"onnxruntime": fp32, "openvino": ir},
        "int8": {"onnxruntime": scratch / "int8.onnx", "openvino": scratch / "int8.xml"},
    }
