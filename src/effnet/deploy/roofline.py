"""A roofline limit for inference: the least time this machine could take for a model, layer by
layer, counting both arithmetic and memory traffic.

The arithmetic-only limit (2 x MACs over the fp32 peak, ``vs_limit``) assumes every layer keeps
the FMA units busy; a depthwise convolution does ~9-25 FLOPs per value it reads and writes, so it
waits on memory, and EfficientNet is mostly such layers. Here every convolution and linear layer
costs max(FLOPs / peak, bytes moved / bandwidth), with:

* bytes: its input, weights and output once each, at the precision's element size (fp32 4 bytes,
  bf16 2, int8 1: an int8 engine keeps activations in int8 between quantized layers), as an
  engine that folds BatchNorm and fuses activations and residual adds into the convolution moves
  them (the residual's shortcut is one more read); the squeeze-excitation gate adds one read of
  its tensor (the pooling) and one read and write (the scaling), since the pooled value exists
  only after the whole tensor does;
* bandwidth: measured by copying buffers of 64 KiB to 512 MiB; a layer gets the best rate measured
  on a buffer at least its working set's size, so a batch-1 layer whose tensors fit in cache is
  held to the cache's speed, not to DRAM's;
* peak: the best rate of a large matrix product on the same threads (``peak_gflops``), in fp32,
  and in bf16 and int8 where the CPU has instructions for them (AMX runs both several times faster
  than fp32: a bf16 or int8 model is held to its own peak, not to fp32's).

``layer_time`` also times each layer type of the eager model, for the plot of where time goes.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from effnet.core.machine import cpu_has_bf16, cpu_has_int8_dot
from effnet.models.blocks import FusedMBConv, MBConv
from effnet.models.fuse import fuse_batchnorm

FLOAT_BYTES = 4
PRECISION_BYTES = {"fp32": 4, "bf16": 2, "int8": 1}
# Working-set sizes at which the copy bandwidth is measured: L1/L2-, L2-, L3- and DRAM-sized.
BANDWIDTH_SIZES = (64 << 10, 1 << 20, 16 << 20, 512 << 20)
# Layer types, in the order the plot shows them; every convolution of an EfficientNet is one.
LAYER_TYPES = ("stem", "expand 1x1", "fused 3x3", "depthwise", "SE", "project 1x1", "head", "classifier")


def layer_type(name: str) -> str:
    """The type of an EfficientNet module from its name (the blocks name their parts)."""
    last = name.rsplit(".", 1)[-1]
    if name.startswith("stem"):
        return "stem"
    if last == "se" or ".se." in name:
        return "SE"
    return {
        "expand_conv": "expand 1x1",
        "fused_conv": "fused 3x3",
        "dw_conv": "depthwise",
        "project_conv": "project 1x1",
        "classifier": "classifier",
    }.get(last, "head" if name.startswith(("head", "pool")) else "other")


def peak_gflops(threads: int, side: int = 2048, seconds: float = 1.0, precision: str = "fp32") -> float:
    """The CPU's rate on ``threads`` threads (GFLOP/s; GOP/s for int8): the best of repeated
    ``side``-square matrix products, the kernels that run closest to the units' peak of anything
    torch does (oneDNN's; int8 by ``torch._int_mm``, int8 in and int32 out, as int8 inference runs)."""
    torch.set_num_threads(threads)
    if precision == "int8":
        a = torch.randint(-128, 128, (side, side), dtype=torch.int8)
        b = torch.randint(-128, 128, (side, side), dtype=torch.int8)
        product = torch._int_mm
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
        product = torch.mm
    product(a, b)  # warm-up: thread pool, packing buffers
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        product(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * side**3 / best / 1e9


def precisions_present() -> tuple[str, ...]:
    """fp32, and bf16 and int8 where the CPU has instructions for them."""
    return ("fp32",) + ("bf16",) * cpu_has_bf16() + ("int8",) * cpu_has_int8_dot()


def bandwidth_gbs(threads: int, sizes=BANDWIDTH_SIZES, seconds: float = 0.15) -> dict[int, float]:
    """GB/s of copying a buffer of each working-set size (half read, half written), best of
    repeats: the rate a layer whose tensors total that many bytes can stream them at."""
    torch.set_num_threads(threads)
    rates = {}
    for size in sizes:
        src = torch.ones(size // 2 // FLOAT_BYTES)
        dst = torch.empty_like(src)
        dst.copy_(src)
        best, start = float("inf"), time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            dst.copy_(src)
            best = min(best, time.perf_counter() - t)
        rates[size] = 2 * src.numel() * FLOAT_BYTES / best / 1e9
    return rates


@dataclass(frozen=True)
class Machine:
    """What the roofline is drawn from: fp32 peak (GFLOP/s), bandwidth by working-set size, and
    the bf16/int8 peaks where the CPU has them."""

    peak_gflops: float
    bandwidth_gbs: dict[int, float]
    low_precision_peaks: dict[str, float] = field(default_factory=dict)

    @classmethod
    def measure(cls, threads: int, peak: float | None = None, precisions: tuple[str, ...] = ("fp32",)) -> Machine:
        """Measured on ``threads`` threads; a stated ``peak`` (fp32 GFLOP/s) is taken as it is.
        ``precisions`` beyond fp32 are measured where the CPU has them (``precisions_present``)."""
        others = {p: peak_gflops(threads, seconds=0.5, precision=p) for p in precisions
                  if p != "fp32" and p in precisions_present()}  # fmt: skip
        return cls(peak or peak_gflops(threads), bandwidth_gbs(threads), others)

    def peak_for(self, precision: str) -> float:
        """The peak a model in ``precision`` is held to: its own where measured, else fp32's (an
        engine on a CPU without bf16/int8 instructions runs such layers no faster than fp32)."""
        if precision not in PRECISION_BYTES:
            raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISION_BYTES)}")
        return self.low_precision_peaks.get(precision, self.peak_gflops)

    def bandwidth_for(self, nbytes: float) -> float:
        """The best bandwidth measured on a working set that holds ``nbytes`` (a copy of 64 KiB
        is slowed by the call's own overhead, so it can measure below 1 MiB's in-cache rate)."""
        fitting = [rate for size, rate in self.bandwidth_gbs.items() if size >= nbytes]
        return max(fitting) if fitting else self.bandwidth_gbs[max(self.bandwidth_gbs)]

    def to_dict(self) -> dict:
        return {"peak_gflops": round(self.peak_gflops, 1),
                **{f"peak_gflops_{p}": round(v, 1) for p, v in self.low_precision_peaks.items()},
                "bandwidth_gbs": {str(k): round(v, 1) for k, v in self.bandwidth_gbs.items()}}  # fmt: skip


@dataclass
class LayerCost:
    name: str
    type: str
    flops: float
    bytes: float
    compute_ms: float = 0.0
    memory_ms: float = 0.0

    @property
    def limit_ms(self) -> float:
        return max(self.compute_ms, self.memory_ms)

    def to_dict(self) -> dict:
        return {**asdict(self), "limit_ms": self.limit_ms}


def layer_costs(model: nn.Module, batch: int, image_size: int, precision: str = "fp32") -> list[LayerCost]:
    """FLOPs and bytes moved of every convolution and linear layer of ``model`` (BN folded) on a
    ``batch`` of ``image_size`` images in ``precision``, plus the SE gates' and residual adds' extra traffic."""
    model = fuse_batchnorm(model)
    element = PRECISION_BYTES[precision]
    costs: list[LayerCost] = []
    hooks = []

    def weighted(name):
        def hook(module, inputs, output):
            (x,) = inputs
            if isinstance(module, nn.Conv2d):
                per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            else:
                per_output = module.in_features
            nbytes = (x.numel() + output.numel() + module.weight.numel()) * element
            costs.append(LayerCost(name, layer_type(name), 2.0 * output.numel() * per_output, nbytes))

        return hook

    def gate(name):
        def hook(module, inputs, output):
            costs.append(LayerCost(f"{name}.scale", "SE", 2.0 * output.numel(), 3 * output.numel() * element))

        return hook

    def shortcut(name):
        def hook(module, inputs, output):
            if module.has_residual:
                costs.append(LayerCost(f"{name}.add", "project 1x1", output.numel(), output.numel() * element))

        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            hooks.append(module.register_forward_hook(weighted(name)))
        elif name.endswith(".se"):
            hooks.append(module.register_forward_hook(gate(name)))
        elif isinstance(module, MBConv | FusedMBConv):
            hooks.append(module.register_forward_hook(shortcut(name)))
    try:
        with torch.no_grad():
            model(torch.zeros(batch, model.config.in_chans, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
    return costs


def roofline(model: nn.Module, batch: int, image_size: int, machine: Machine,
             precision: str = "fp32") -> list[LayerCost]:  # fmt: skip
    """``layer_costs`` with each layer's compute and memory time on ``machine`` in ``precision``."""
    peak = machine.peak_for(precision)
    costs = layer_costs(model, batch, image_size, precision)
    for cost in costs:
        cost.compute_ms = cost.flops / (peak * 1e9) * 1e3
        cost.memory_ms = cost.bytes / (machine.bandwidth_for(cost.bytes) * 1e9) * 1e3
    return costs


def by_type(costs: list[LayerCost]) -> dict[str, dict]:
    """Limit, FLOPs and bytes summed per layer type."""
    totals: dict[str, dict] = {}
    for cost in costs:
        row = totals.setdefault(cost.type, {"limit_ms": 0.0, "flops": 0.0, "bytes": 0.0, "memory_bound": 0})
        row["limit_ms"] += cost.limit_ms
        row["flops"] += cost.flops
        row["bytes"] += cost.bytes
        row["memory_bound"] += cost.memory_ms > cost.compute_ms
    return {t: totals[t] for t in (*LAYER_TYPES, "other") if t in totals}


def eager_time_by_type(model: nn.Module, batch: int, image_size: int, repeats: int = 20) -> dict[str, float]:
    """Median milliseconds per layer type of the BN-folded eager model, timed by hooks around each
    convolution, linear layer and SE gate (activations, adds and pooling outside them: "other")."""
    model = fuse_batchnorm(model)
    spans: dict[str, float] = {}
    starts: list[float] = []
    hooks = []

    def before(module, inputs):
        starts.append(time.perf_counter())

    def after(kind):
        def hook(module, inputs, output):
            spans[kind] = spans.get(kind, 0.0) + time.perf_counter() - starts.pop()

        return hook

    for name, module in model.named_modules():
        timed = isinstance(module, nn.Conv2d | nn.Linear) and ".se." not in name
        if timed or name.endswith(".se"):
            hooks += [module.register_forward_pre_hook(before), module.register_forward_hook(after(layer_type(name)))]
    x = torch.randn(batch, model.config.in_chans, image_size, image_size)
    runs: list[dict[str, float]] = []
    try:
        with torch.no_grad():
            model(x)  # warm-up
            for _ in range(repeats):
                spans.clear()
                start = time.perf_counter()
                model(x)
                total = time.perf_counter() - start
                runs.append({**spans, "other": total - sum(spans.values())})
    finally:
        for hook in hooks:
            hook.remove()
    kinds = [t for t in (*LAYER_TYPES, "other") if t in runs[0]]
    return {kind: statistics.median(run[kind] for run in runs) * 1e3 for kind in kinds}


def breakdown(model: nn.Module, batch: int, image_size: int, machine: Machine) -> dict[str, dict]:
    """Per layer type: the roofline limit (``by_type``) beside the BN-folded eager model's time."""
    types = by_type(roofline(model, batch, image_size, machine))
    eager = eager_time_by_type(model, batch, image_size)
    empty = {"limit_ms": None, "flops": None, "bytes": None, "memory_bound": None}
    return {t: {**empty, **types.get(t, {}), "eager_ms": eager.get(t)} for t in dict.fromkeys([*types, *eager])}


def plot_breakdown(breakdowns: dict[str, dict[str, dict]], path) -> None:
    """One panel per (model, batch): milliseconds per layer type, eager against the limit."""
    from effnet.core.figures import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(breakdowns), figsize=(6.5 * len(breakdowns), 4), squeeze=False)
    for ax, (title, types) in zip(axes[0], breakdowns.items(), strict=True):
        names = list(types)
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [types[t].get("eager_ms") or 0 for t in names], 0.4, label="eager (BN folded)")
        ax.bar([x + 0.2 for x in xs], [types[t].get("limit_ms") or 0 for t in names], 0.4, label="roofline limit")
        ax.set_xticks(list(xs), names, rotation=30, ha="right")
        ax.set_ylabel("ms per batch")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
