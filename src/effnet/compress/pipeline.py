"""``effnet compress``: distillation, pruning and quantization chained, every stage measured the
same way.

Each stage's model is exported to ONNX (int8 for quantization) and then measured only through
that file: test top-1 with ``effnet eval``'s code, latency at batch 1 on ONNX Runtime and on
OpenVINO (which reads the same fp32 or int8 QDQ file) with all stages and both engines timed side
by side in one interleaved loop (the machine is noisy; ratios between stages measured together
are what carry over), file size, and params/MACs of the architecture.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from effnet.compress.choices import STEPS
from effnet.compress.prune import check_ratio, prune
from effnet.compress.quantize import quantize
from effnet.core.errors import UsageError
from effnet.core.figures import pyplot, save_figure
from effnet.core.fileio import atomic_write
from effnet.deploy.bench import time_interleaved
from effnet.deploy.evaluate import evaluate
from effnet.deploy.export import export
from effnet.deploy.openvino import OpenVinoModel
from effnet.deploy.runtime import OnnxModel
from effnet.models.flops import count_macs, count_params
from effnet.tasks.registry import task_of
from effnet.training.classify import train
from effnet.training.config import SHORT_RUN, TrainConfig
from effnet.weights.io import load, read_metadata
from effnet.weights.trained import load_trained, require_model_file


@dataclass
class StageRow:
    stage: str
    file: str
    params: int
    macs: int
    file_bytes: int
    latency_ms: float | None = None  # ONNX Runtime
    test_top1: float | None = None
    openvino_latency_ms: float | None = None


def parse_steps(text: str) -> list[str]:
    steps = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        raise UsageError(f"--steps takes a comma-separated subset of {', '.join(STEPS)}, got {text!r}")
    if len(set(steps)) != len(steps):
        raise UsageError(f"--steps lists a step twice: {text!r}")
    if "quantize" in steps and steps[-1] != "quantize":
        raise UsageError("quantize must be the last step: the int8 graph cannot be trained or pruned further")
    return steps


def _default_student(teacher_config) -> str:
    if teacher_config.phi is None:
        raise UsageError("the teacher is not a phi-scaled model; say which --student to distil into")
    return f"phi:{teacher_config.phi - 1:g}"


def compress(
    weights: str,
    out: str | Path,
    *,
    steps: list[str],
    data: str | None = None,
    student: str | None = None,
    epochs: int = 3,
    prune_ratio: float = 0.5,
    finetune_epochs: int = 1,
    calibration_images: int = 256,
    limit_train: int | None = None,
    seed: int = 0,
    timing_seconds: float = 2.0,
    progress=None,
) -> list[StageRow]:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} exists and is not an empty directory")
    require_model_file(weights)
    if "prune" in steps:
        check_ratio(prune_ratio)
    trained = load_trained(weights)
    original = trained.model
    task = task_of(original)
    if task != "classification":
        raise UsageError(
            f"--weights {weights}: a {task} model; the pipeline (distillation needs class logits) is for "
            "classifiers, while effnet prune and effnet quantize take it one step at a time"
        )
    options = trained.provenance.data_options(data, origin=weights)
    data = options["data"]
    say = progress or (lambda text: None)

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".effnet-compress-", dir=out.parent) as tmp:
        scratch = Path(tmp)
        stages: list[tuple[str, Path]] = [("original", Path(weights))]
        current = Path(weights)
        for step in steps:
            say(f"{step}...")
            if step == "distill":
                name = student or _default_student(original.config)
                phi = float(name.split(":", 1)[1]) if name.startswith("phi:") else None
                cfg = TrainConfig(
                    model=None if phi is not None else name,
                    phi=phi,
                    teacher=str(current),
                    data=data,
                    data_dir=options["data_dir"],
                    val_split=options["val_split"],
                    image_size=original.config.resolution,
                    limit_train=limit_train,
                    epochs=epochs,
                    seed=seed,
                    lr=0.004,
                    **SHORT_RUN,
                )
                train(cfg, scratch / "distill", quiet=True)
                current = scratch / "distill" / "best.safetensors"
            elif step == "prune":
                target = scratch / "pruned.safetensors"
                prune(str(current), prune_ratio, str(target), data=data, finetune_epochs=finetune_epochs,
                      limit_train=limit_train, seed=seed)  # fmt: skip
                current = target
            else:
                target = scratch / "int8.onnx"
                quantize(str(current), str(target), data=data, calibration_images=calibration_images, seed=seed,
                         evaluate_split=None)  # fmt: skip
                current = target
            stages.append((step, current))
        rows = _measure(stages, options, scratch, say, timing_seconds)
        # The stage files and the report appear together, complete, or not at all.
        final = scratch / "result"
        final.mkdir()
        for row, (_, path) in zip(rows, stages, strict=True):
            if row.stage != "original":
                name = f"{row.stage}{path.suffix}"
                (final / name).write_bytes(path.read_bytes())
                row.file = str(out / name)
        write_report(rows, final, {"weights": str(weights), "data": data, "steps": steps})
        if out.exists():
            out.rmdir()
        final.rename(out)
    return rows


def _measure(stages, options: dict, scratch: Path, say, timing_seconds: float = 2.0) -> list[StageRow]:
    rows, sessions = [], {}
    config = None
    for stage, path in stages:
        if path.suffix == ".onnx":
            onnx_path = path  # int8: the architecture is the previous stage's
        else:
            model = load(path)
            config = model.config
            onnx_path = scratch / f"measure-{stage}.onnx"
            training = read_metadata(path).get("training")
            export(model, onnx_path, dynamic_batch=True, extra_metadata={"training": training} if training else None)
        say(f"evaluating {stage}...")
        metrics = evaluate(str(onnx_path), options["data"], data_dir=options["data_dir"], split="test")
        sessions[stage] = OnnxModel(onnx_path)
        sessions[f"{stage} openvino"] = OpenVinoModel(onnx_path)
        rows.append(
            StageRow(
                stage=stage,
                file=str(path),
                params=count_params(config),
                macs=count_macs(config),
                file_bytes=onnx_path.stat().st_size,
                test_top1=metrics["top1"],
            )
        )
    say("timing every stage on ONNX Runtime and OpenVINO, interleaved...")
    side = next(iter(sessions.values())).input["image_size"]
    x = torch.randn(1, 3, side, side)
    times = time_interleaved(sessions, x, warmup=5, min_runs=30, min_seconds=timing_seconds)
    for row in rows:
        row.latency_ms = statistics.median(times[row.stage]) * 1e3
        row.openvino_latency_ms = statistics.median(times[f"{row.stage} openvino"]) * 1e3
    return rows


def write_report(rows: list[StageRow], out: Path, settings: dict) -> None:
    base = rows[0]
    table = [
        "| stage | params | MACs (M) | ONNX file (MB) | ORT latency b1 (ms) | OpenVINO latency b1 (ms) "
        "| test top-1 (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r.stage} | {r.params:,} | {r.macs / 1e6:.1f} ({r.macs / base.macs:.2f}x) | "
            f"{r.file_bytes / 1e6:.2f} ({r.file_bytes / base.file_bytes:.2f}x) | "
            f"{r.latency_ms:.2f} ({r.latency_ms / base.latency_ms:.2f}x) | "
            f"{r.openvino_latency_ms:.2f} ({r.openvino_latency_ms / base.openvino_latency_ms:.2f}x) | "
            f"{100 * r.test_top1:.2f} |"
        )
    text = "\n".join(table) + "\n"
    atomic_write(out / "report.md", lambda f: f.write(text.encode()))
    payload = json.dumps({**settings, "stages": [asdict(r) for r in rows]}, indent=2) + "\n"
    atomic_write(out / "report.json", lambda f: f.write(payload.encode()))
    plot(rows, out / "accuracy_latency.png")


def plot(rows: list[StageRow], path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    ys = [100 * r.test_top1 for r in rows]
    for key, label, color in (("latency_ms", "ONNX Runtime", "tab:blue"),
                              ("openvino_latency_ms", "OpenVINO", "tab:orange")):  # fmt: skip
        xs = [getattr(r, key) for r in rows]
        ax.plot(xs, ys, "o-", color=color, label=label)
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(r.stage, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.legend(fontsize=8)
    ax.set(xlabel="latency, batch 1 (ms)", ylabel="test top-1 (%)", title="Compression stages")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
