"""The roofline limit: FLOPs equal torch's counter, bytes follow from the shapes, depthwise layers
are memory-bound and wide 1x1s compute-bound, and the limit is never below arithmetic's."""

import pytest

import effnet
from effnet.core.machine import has_amx
from effnet.deploy.bench import _rows
from effnet.deploy.roofline import (
    FLOAT_BYTES,
    LAYER_TYPES,
    Machine,
    breakdown,
    by_type,
    layer_costs,
    peak_gflops,
    precisions_present,
    roofline,
)
from effnet.models.flops import count_macs
from effnet.models.registry import resolve_config

# A stated machine (no timing): 300 GFLOP/s; 200 GB/s up to 1 MiB, 20 GB/s beyond.
MACHINE = Machine(300.0, {1 << 20: 200.0, 1 << 30: 20.0})


@pytest.fixture(scope="module")
def b0():
    return effnet.create_model("efficientnet_b0")


def test_flops_of_every_layer_sum_to_torchs_count_and_every_layer_has_a_type(b0):
    costs = layer_costs(b0, 1, 224)
    weighted = [c for c in costs if not c.name.endswith((".scale", ".add"))]
    assert sum(c.flops for c in weighted) == 2 * count_macs(resolve_config("efficientnet_b0"), 224)
    assert {c.type for c in costs} == set(LAYER_TYPES) - {"fused 3x3"}  # B0 has no fused blocks
    assert sum(c.type == "depthwise" for c in costs) == 16  # one per MBConv block
    first_dw = next(c for c in costs if c.type == "depthwise")
    # 32 channels at 112 x 112 in and out, 32 3x3 filters, in fp32
    assert first_dw.bytes == (2 * 32 * 112 * 112 + 32 * 9) * FLOAT_BYTES
    assert first_dw.flops == 2 * 32 * 112 * 112 * 9


def test_depthwise_is_memory_bound_and_wide_1x1s_compute_bound(b0):
    costs = roofline(b0, 32, 224, MACHINE)
    depthwise = [c for c in costs if c.type == "depthwise"]
    assert all(c.memory_ms > c.compute_ms for c in depthwise)
    expand = [c for c in costs if c.type == "expand 1x1"]
    assert sum(c.compute_ms > c.memory_ms for c in expand) >= len(expand) // 2
    # the limit is at least the arithmetic limit, layer by layer and in total
    assert all(c.limit_ms >= c.compute_ms for c in costs)
    total = sum(c.limit_ms for c in costs)
    arithmetic = sum(c.compute_ms for c in costs)
    assert total > 1.2 * arithmetic  # EfficientNet is not arithmetic-bound
    types = by_type(costs)
    assert types["depthwise"]["memory_bound"] == 16
    assert sum(t["limit_ms"] for t in types.values()) == pytest.approx(total)


def test_bandwidth_is_taken_for_the_layers_working_set():
    assert MACHINE.bandwidth_for(1000) == 200.0
    assert MACHINE.bandwidth_for(2 << 20) == 20.0
    assert MACHINE.bandwidth_for(4 << 30) == 20.0  # beyond the largest measured size: the largest
    # a small buffer's copy slowed by call overhead does not hold a small layer below a larger one's rate
    assert Machine(300.0, {1 << 16: 50.0, 1 << 20: 150.0, 1 << 30: 30.0}).bandwidth_for(1000) == 150.0


def test_breakdown_times_the_eager_model_by_the_same_types(b0):
    # a machine faster than any CPU: 10 TFLOP/s, 10 TB/s
    types = breakdown(b0, 1, 96, Machine(10_000.0, {1 << 30: 10_000.0}))
    assert {"stem", "expand 1x1", "depthwise", "SE", "project 1x1", "head"} <= set(types)
    measured = {t: v["eager_ms"] for t, v in types.items() if v["eager_ms"] is not None}
    assert all(ms > 0 for t, ms in measured.items() if t != "other")
    # the eager model is slower than the limit in every type that has both
    assert all(v["eager_ms"] > v["limit_ms"] for t, v in types.items() if v["limit_ms"] and t != "other")


def test_a_bf16_or_int8_model_is_held_to_its_own_peak_and_element_size(b0):
    machine = Machine(300.0, {1 << 20: 200.0, 1 << 30: 20.0}, {"bf16": 3000.0})
    fp32, bf16 = roofline(b0, 1, 224, machine), roofline(b0, 1, 224, machine, "bf16")
    int8 = roofline(b0, 1, 224, machine, "int8")  # no int8 peak measured: fp32's, at 1 byte a value
    for a, b, c in zip(fp32, bf16, int8, strict=True):
        assert (b.bytes, c.bytes) == (a.bytes / 2, a.bytes / 4) and b.flops == c.flops == a.flops
        assert b.compute_ms == pytest.approx(a.compute_ms / 10) and c.compute_ms == pytest.approx(a.compute_ms)
    assert sum(c.limit_ms for c in bf16) < sum(c.limit_ms for c in fp32)
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        machine.peak_for("fp16")


def test_the_peaks_of_the_precisions_the_cpu_has_are_measured():
    machine = Machine.measure(1, peak=100.0, precisions=("fp32", "bf16", "int8"))
    assert machine.peak_gflops == 100.0  # stated
    assert set(machine.low_precision_peaks) == set(precisions_present()) - {"fp32"}
    if has_amx():  # AMX's bf16 and int8 tiles run matrix products several times faster than fp32 FMAs
        fp32 = peak_gflops(1, seconds=0.3)
        assert min(machine.low_precision_peaks.values()) > 2 * fp32, (fp32, machine.low_precision_peaks)
    assert machine.to_dict().keys() == {"peak_gflops", "bandwidth_gbs"} | {
        f"peak_gflops_{p}" for p in machine.low_precision_peaks
    }


def test_bench_rows_in_bf16_take_the_bf16_roofline():
    times = {"effnet_onnxruntime": [0.004], "effnet_openvino": [0.002]}
    rows = _rows("efficientnet_b0", 1, 224, 2, times, 1.0, {"fp32": 2.0, "bf16": 1.0}, {"effnet_openvino"})
    by_engine = {r.engine: r for r in rows}
    assert by_engine["effnet_onnxruntime"].precision == "fp32" and by_engine["effnet_onnxruntime"].vs_roofline == 2.0
    assert by_engine["effnet_openvino"].precision == "bf16" and by_engine["effnet_openvino"].vs_roofline == 2.0
