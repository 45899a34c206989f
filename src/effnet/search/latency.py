"""Hardware-aware scaling: measured latency instead of FLOPs.

FLOPs predict latency badly across shapes (depthwise convolutions and SE gates cost far more
time per FLOP than dense convolutions, and wide-but-shallow and narrow-but-deep models of the
same FLOPs run at different speeds; and the runtime matters as much: one graph runs at different
speeds on torch, ONNX Runtime and OpenVINO), so the budget is checked by timing the model on the
device and engine that will run it. Two uses:

* ``fit_phi``: with alpha, beta, gamma fixed, the largest continuous phi whose measured
  latency fits a budget (latency grows with phi, so a bracket and a bisection find it).
* ``mnas_reward``: MnasNet's soft constraint (Tan et al., 2019), accuracy x (latency / T)^w
  with w = -0.07, to rank candidates by accuracy and speed together.
"""

from __future__ import annotations

import math
import statistics

import torch

from effnet.core.errors import UsageError
from effnet.deploy.bench import eager_runner, time_interleaved
from effnet.deploy.choices import ENGINES
from effnet.deploy.engines import onnx_engine, openvino_engine
from effnet.models.fuse import fuse_batchnorm
from effnet.models.registry import build_model
from effnet.search.proxy import Proxy

MNAS_W = -0.07


def mnas_reward(accuracy: float, latency_ms: float, target_ms: float, w: float = MNAS_W) -> float:
    """ACC(m) x [LAT(m) / T]^w: a model twice as slow as the target loses ~5% of its score."""
    return accuracy * (latency_ms / target_ms) ** w


def resolve_latency_device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here")
        return torch.device("cuda")
    raise UsageError(f"--device must be cpu or cuda, got {name!r}")


def measure_latency_ms(
    config, device: str = "cpu", batch: int = 1, min_runs: int = 20, min_seconds: float = 0.5, engine: str = "torch"
) -> float:
    """Median batch latency on the engine the model will be deployed on: torch's inference form
    (BN folded, channels_last) on ``device``, or the checked export on ONNX Runtime or OpenVINO
    (CPU, latency settings)."""
    dev = resolve_latency_device(device)
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "torch" and dev.type != "cpu":
        raise UsageError(f"--engine {engine} measures on the CPU; use --device cpu")
    x = torch.randn(batch, config.in_chans, config.resolution, config.resolution, device=dev)
    if engine == "onnxruntime":
        run = onnx_engine(build_model(config).eval())
    elif engine == "openvino":
        run = openvino_engine(build_model(config).eval())
    else:
        model = fuse_batchnorm(build_model(config).eval()).to(dev)
        run = eager_runner(model, channels_last=True)
    if dev.type == "cuda":
        inner = run

        def run(x):  # kernels are asynchronous: time to completion
            out = inner(x)
            torch.cuda.synchronize()
            return out

    times = time_interleaved({"model": run}, x, min_runs=min_runs, min_seconds=min_seconds)["model"]
    return statistics.median(times) * 1e3


def fit_phi(
    proxy: Proxy,
    alpha: float,
    beta: float,
    gamma: float,
    budget_ms: float,
    *,
    device: str = "cpu",
    engine: str = "torch",
    num_classes: int = 10,
    phi_step: float = 0.05,
    phi_range: tuple[float, float] = (-4.0, 8.0),
    progress=None,
) -> dict:
    """The largest phi (to ``phi_step``) whose measured latency is within ``budget_ms``."""
    if not (isinstance(budget_ms, (int, float)) and math.isfinite(budget_ms) and budget_ms > 0):
        raise UsageError(f"--latency-budget-ms must be a positive number, got {budget_ms!r}")
    resolve_latency_device(device)
    measured: dict[float, dict] = {}

    def latency(phi: float) -> float:
        phi = round(phi, 4)
        if phi not in measured:
            shape = proxy.compound(alpha, beta, gamma, phi)
            config = proxy.config(shape, num_classes=num_classes)
            ms = measure_latency_ms(config, device, engine=engine)
            measured[phi] = {"phi": phi, "latency_ms": ms, **shape.__dict__, **proxy.cost(shape)}
            if progress:
                progress(measured[phi])
        return measured[phi]["latency_ms"]

    low, high = phi_range
    phi = 0.0
    if latency(phi) <= budget_ms:  # step up to the first phi over the budget
        fits, over = phi, None
        while phi < high:
            phi = min(high, phi + 1.0)
            if latency(phi) > budget_ms:
                over = phi
                break
            fits = phi
        if over is None:
            raise UsageError(
                f"even phi={high:g} runs in {latency(high):.2f} ms, within --latency-budget-ms {budget_ms}"
            )
    else:  # step down to the first phi that fits
        over, fits = phi, None
        while phi > low:
            phi = max(low, phi - 1.0)
            if latency(phi) <= budget_ms:
                fits = phi
                break
            over = phi
        if fits is None:
            raise UsageError(
                f"even phi={low:g} takes {latency(low):.2f} ms on {device}, over --latency-budget-ms {budget_ms}"
            )
    while over - fits > phi_step:
        middle = (fits + over) / 2
        if latency(middle) <= budget_ms:
            fits = middle
        else:
            over = middle
    best = measured[round(fits, 4)]
    return {
        "alpha": alpha,
        "beta": beta,
        "gamma": gamma,
        "latency_budget_ms": budget_ms,
        "device": device,
        "engine": engine,
        **best,
        "measurements": sorted(measured.values(), key=lambda m: m["phi"]),
    }
