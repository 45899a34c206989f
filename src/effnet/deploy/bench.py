"""Inference latency side by side: the peers' eager models, ours eager, ours and torchvision's
exports on ONNX Runtime and on OpenVINO, ours on the mobile runtimes (LiteRT, ExecuTorch), all
in one process, interleaved.

The machine is shared and noisy, so every engine is timed in the same rounds (one call of each
per round, in rotating order), and the figures that carry over are the ratios to torchvision
eager in the same run. Threads are pinned to the same count for torch, ONNX Runtime and OpenVINO,
and ONNX Runtime's pools do not spin (spinning pools of interleaved sessions steal each other's cores).

Each row also has its ratio to the physical limit: the model's multiply-adds (2 FLOPs each, counted
by ``torch.utils.flop_counter``) over the CPU's fp32 peak, measured here as the best rate of a
2048x2048 fp32 matrix product on the same threads (``peak_gflops``; ``--peak-gflops`` states one
instead). No real network reaches it (depthwise convolutions and SE gates are memory-bound), but it
says how far from the machine, not just from another library, each engine is. ``vs_roofline``
holds each row to a limit any network could reach: per layer, the larger of its arithmetic time
and its memory-traffic time at the measured bandwidth (effnet.deploy.roofline).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from effnet.core.errors import UsageError
from effnet.core.figures import pyplot, save_figure
from effnet.deploy.choices import BENCH_ENGINES as ENGINES
from effnet.deploy.export import export, onnx_program
from effnet.deploy.litert import LiteRTModel
from effnet.deploy.openvino import OpenVinoModel, Runner, compile_properties, read_model
from effnet.deploy.pte import ExecuTorchModel
from effnet.deploy.roofline import Machine, breakdown, roofline
from effnet.deploy.runtime import OnnxModel, open_session
from effnet.models.flops import count_macs
from effnet.models.fuse import fuse_batchnorm
from effnet.models.registry import create_model, get_entry, resolve_config

BASELINE = "torchvision"


@dataclass
class BenchRow:
    model: str
    engine: str
    batch: int
    image_size: int
    threads: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    images_per_s: float
    vs_torchvision: float | None = None
    vs_limit: float | None = None  # median / (2 x MACs x batch / peak fp32 FLOP/s)
    vs_roofline: float | None = None  # median / the sum over layers of max(FLOPs / peak, bytes / bandwidth)
    precision: str = "fp32"  # what the engine computes in, and the peak and element size its roofline takes
    peak_gflops: float | None = None  # the measured (or stated) peak of that precision on these threads

    def to_dict(self) -> dict:
        return asdict(self)


def _torchvision_model(name: str):
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        return None
    return torchvision.models.get_model(name, weights=None).eval()


def _timm_model(name: str):
    import timm

    return timm.create_model(name, pretrained=False).eval() if name in timm.list_models(name) else None


def eager_runner(model: torch.nn.Module, channels_last: bool) -> Callable[[torch.Tensor], object]:
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def run(x: torch.Tensor):
        with torch.inference_mode():
            return model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)

    return run


def _torchvision_proto(model: torch.nn.Module, image_size: int):
    """torchvision's model exported with the same exporter and options as ``effnet export`` (but
    none of our graph rewrites), as a user would export it."""
    return onnx_program(model, torch.randn(1, 3, image_size, image_size), dynamic_batch=True)


def _onnx_session(model: torch.nn.Module, image_size: int, threads: int):
    """torchvision's export on a session with the same options as ours."""
    session = open_session(_torchvision_proto(model, image_size), threads)

    def run(x: torch.Tensor):
        return session.run(None, {"image": x.numpy()})

    return run


def build_engines(name: str, image_size: int, threads: int, scratch: Path, engines=ENGINES, ov_hint: str = "latency",
                  ov_precision: str = "f32") -> dict[str, Callable]:  # fmt: skip
    """Callables for every engine available for ``name`` (torchvision has only B0-B7)."""
    out: dict[str, Callable] = {}
    tv = _torchvision_model(name)
    if tv is not None and "torchvision" in engines:
        out["torchvision"] = eager_runner(tv, channels_last=False)
    if "timm" in engines and (tm := _timm_model(name)) is not None:
        out["timm"] = eager_runner(tm, channels_last=False)
    ours = create_model(name)
    if "effnet" in engines:
        # The form `effnet predict` runs: BN folded, channels_last.
        out["effnet"] = eager_runner(fuse_batchnorm(ours), channels_last=True)
    if "effnet_onnxruntime" in engines:
        result = export(ours, scratch / f"{name}.onnx", image_size=image_size, dynamic_batch=True)
        session = OnnxModel(result.path, threads=threads).session

        def run_ours(x: torch.Tensor, session=session):
            return session.run(None, {"image": x.numpy()})

        out["effnet_onnxruntime"] = run_ours
    if tv is not None and "torchvision_onnxruntime" in engines:
        out["torchvision_onnxruntime"] = _onnx_session(tv, image_size, threads)
    properties = {"threads": threads, "hint": ov_hint, "precision": ov_precision}
    if "effnet_openvino" in engines:
        result = export(ours, scratch / f"{name}.xml", format="openvino", image_size=image_size, dynamic_batch=True)
        runner = OpenVinoModel(result.path, **properties).runner
        out["effnet_openvino"] = lambda x, runner=runner: runner.run_batch(x.numpy())
    for format in ("litert", "executorch"):
        if f"effnet_{format}" in engines:
            out[f"effnet_{format}"] = _mobile_runner(ours, format, image_size, threads, scratch)
    if tv is not None and "torchvision_openvino" in engines:
        # torchvision's ONNX export (the same file as its ONNX Runtime row) compiled by OpenVINO
        path = scratch / f"torchvision_{name}.onnx"
        path.write_bytes(_torchvision_proto(tv, image_size).SerializeToString())
        runner = Runner(read_model(path), compile_properties(**properties, cache_dir=None), path)
        out["torchvision_openvino"] = lambda x, runner=runner: runner.run_batch(x.numpy())
    return out


def _mobile_runner(model: torch.nn.Module, format: str, image_size: int, threads: int, scratch: Path) -> Callable:
    """A LiteRT or ExecuTorch export run as on the device: a fixed batch, so one file per batch
    size, exported (and checked) on its first call, which the warm-up rounds make."""
    opened: dict[int, Callable] = {}
    suffix = {"litert": ".tflite", "executorch": ".pte"}[format]
    engine = {"litert": LiteRTModel, "executorch": ExecuTorchModel}[format]

    def run(x: torch.Tensor):
        if len(x) not in opened:
            path = scratch / f"{model.config.name}_b{len(x)}{suffix}"
            export(model, path, format=format, image_size=image_size, batch_size=len(x))
            opened[len(x)] = engine(path, threads=threads)._run
        return opened[len(x)](x.numpy())

    return run


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench(
    models: list[str],
    batch_sizes: list[int],
    *,
    image_size: int | None = None,
    threads: int | None = None,
    warmup: int = 3,
    min_runs: int = 10,
    min_seconds: float = 3.0,
    engines=ENGINES,
    ov_hint: str = "latency",
    ov_precision: str = "f32",
    peak: float | None = None,
    progress: bool = False,
) -> list[BenchRow]:
    """Median latency of every engine, per model and batch size, with its ratio to torchvision and
    to the physical limit (``peak`` GFLOP/s; measured by ``peak_gflops`` when None)."""
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise UsageError(f"unknown engine(s) {', '.join(unknown)}; known: {', '.join(ENGINES)}")
    if not batch_sizes or min(batch_sizes) < 1:
        raise UsageError(f"--batch-sizes must be positive integers, got {batch_sizes}")
    for name in models:
        get_entry(name)  # unknown names fail before minutes of exporting
    threads = threads or torch.get_num_threads()
    if threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    if any(e.endswith("_openvino") for e in engines):
        compile_properties(threads, ov_hint, ov_precision, None)  # bad options fail before any export
    if peak is not None and not peak > 0:
        raise UsageError(f"--peak-gflops must be positive, got {peak}")
    # bf16's peak too where a row runs in bf16 (OpenVINO under --ov-precision bf16) and the CPU has
    # it: such rows are held to it; without bf16 instructions OpenVINO runs f32
    bf16_engines = {e for e in engines if e.endswith("_openvino")} if ov_precision == "bf16" else set()
    machine = Machine.measure(threads, peak, ("fp32", "bf16") if bf16_engines else ("fp32",))
    peak = machine.peak_gflops
    if "bf16" not in machine.low_precision_peaks:
        bf16_engines = set()

    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="effnet-bench-") as scratch:
        for name in models:
            size = image_size or resolve_config(name).resolution
            runners = build_engines(name, size, threads, Path(scratch), engines, ov_hint, ov_precision)
            macs = count_macs(resolve_config(name), size)
            model = create_model(name)  # for the roofline's layer shapes
            for batch in batch_sizes:
                x = torch.randn(batch, 3, size, size)
                times = time_interleaved(
                    runners,
                    x,
                    warmup=warmup,
                    min_runs=min_runs,
                    min_seconds=min_seconds,
                    progress=progress,
                    label=f"{name} b{batch}",
                )
                limit_ms = 2 * macs * batch / (peak * 1e9) * 1e3
                roof_ms = {p: sum(c.limit_ms for c in roofline(model, batch, size, machine, p))
                           for p in ("fp32", "bf16") if p == "fp32" or bf16_engines}  # fmt: skip
                for row in _rows(name, batch, size, threads, times, limit_ms, roof_ms, bf16_engines):
                    row.peak_gflops = machine.peak_for(row.precision)
                    rows.append(row)
    return rows


def time_interleaved(
    runners,
    x,
    *,
    warmup: int = 3,
    min_runs: int = 10,
    min_seconds: float = 1.0,
    progress: bool = False,
    label: str = "",
) -> dict[str, list[float]]:
    """Seconds per call of every runner, timed in rounds of one call each in rotating order."""
    from tqdm import tqdm

    for run in runners.values():
        for _ in range(warmup):
            run(x)
    times: dict[str, list[float]] = {k: [] for k in runners}
    order = list(runners)
    bar = tqdm(total=min_runs, desc=label, disable=not progress, leave=False)
    rounds = 0
    while rounds < min_runs or min(sum(t) for t in times.values()) < min_seconds:
        for key in order:
            start = time.perf_counter()
            runners[key](x)
            times[key].append(time.perf_counter() - start)
        order = order[1:] + order[:1]  # no engine always runs right after the same one
        rounds += 1
        bar.update(1)
    bar.close()
    return times


def _rows(name, batch, size, threads, times, limit_ms: float | None = None,
          roofline_ms: dict[str, float] | None = None, bf16_engines=frozenset()) -> list[BenchRow]:  # fmt: skip
    rows = []
    for engine, ts in times.items():
        median = statistics.median(ts)
        rows.append(
            BenchRow(
                model=name,
                engine=engine,
                batch=batch,
                image_size=size,
                threads=threads,
                median_ms=median * 1e3,
                p10_ms=_percentile(ts, 0.1) * 1e3,
                p90_ms=_percentile(ts, 0.9) * 1e3,
                runs=len(ts),
                images_per_s=batch / median,
                precision="bf16" if engine in bf16_engines else "fp32",
            )
        )
    base = next((r for r in rows if r.engine == BASELINE), None)
    for r in rows:
        r.vs_torchvision = r.median_ms / base.median_ms if base else None
        r.vs_limit = r.median_ms / limit_ms if limit_ms else None
        r.vs_roofline = r.median_ms / roofline_ms[r.precision] if roofline_ms else None
    return rows


def plot(rows: list[BenchRow], path: str | Path) -> None:
    """Latency relative to torchvision eager, a group of bars per (model, batch)."""
    plt = pyplot()

    groups = sorted({(r.model, r.batch) for r in rows}, key=lambda g: (g[0], g[1]))
    engines = [e for e in ENGINES if any(r.engine == e for r in rows)]
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(groups), 4))
    width = 0.8 / len(engines)
    for i, engine in enumerate(engines):
        values = []
        for model, batch in groups:
            row = next((r for r in rows if (r.model, r.batch, r.engine) == (model, batch, engine)), None)
            values.append(row.vs_torchvision if row and row.vs_torchvision else 0.0)
        xs = [g + (i - (len(engines) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=engine)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(groups)), [f"{m}\nbatch {b}" for m, b in groups])
    ax.set_ylabel("latency / torchvision eager (lower is faster)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def layer_breakdowns(models: list[str], batch: int, *, image_size: int | None = None, threads: int | None = None,
                     peak: float | None = None) -> dict[str, dict]:  # fmt: skip
    """Where each model's time goes by layer type, eager and at the roofline limit
    (``effnet.deploy.roofline.breakdown``), keyed "MODEL batch B"."""
    threads = threads or torch.get_num_threads()
    machine = Machine.measure(threads, peak)
    out = {}
    for name in models:
        size = image_size or resolve_config(name).resolution
        out[f"{name} batch {batch}"] = breakdown(create_model(name), batch, size, machine)
    return out
