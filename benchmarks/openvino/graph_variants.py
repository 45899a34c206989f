"""Why one B0 graph runs faster than another on the same engine: graph form, weights and int8.

B0 at 224, batch 1, every file timed interleaved in one process on ONNX Runtime and OpenVINO (f32,
LATENCY hint), then OpenVINO in bf16:

* ``ours``: the file ``effnet export`` writes (BN folded, ReduceMean -> GlobalAveragePool);
* ``ours_reducemean``: the same export without that rewrite (the exporter's own graph);
* ``ours_gate_first``: ours with the SE gate as the first input of its ``Mul`` (``gate * x``, as
  torchvision writes it; ours writes ``x * gate``): the same numbers, another operand order;
* ``ours_tv_weights``: ours with torchvision's random initial weights converted in: the same
  numbers as torchvision's file in our graph, so a gap to ``torchvision`` is the graph's and a gap
  to ``ours`` is the weights' values;
* ``torchvision``: torchvision's model through the same exporter;
* ``ours_int8``: ``effnet quantize``'s QDQ int8 of ours (calibrated on noise: only speed is
  measured here; accuracy is in benchmarks/compression/);
* ``ours_again`` and ``torchvision_again``: the same files as ``ours`` and ``torchvision`` in
  sessions of their own: the control. How far a file differs from itself in another session is
  how far apart two variants must be before the difference means anything.

    python benchmarks/openvino/graph_variants.py --out benchmarks/openvino/graph_variants.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
import torchvision

import effnet
from effnet.compress.quantize import quantize_onnx
from effnet.core.machine import machine
from effnet.deploy.bench import time_interleaved
from effnet.deploy.export import export, inference_form, onnx_program
from effnet.deploy.openvino import Runner, compile_properties, read_model
from effnet.deploy.runtime import open_session
from effnet.weights.convert import convert_state_dict


def variants(scratch: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    tv = torchvision.models.efficientnet_b0().eval()
    ours = effnet.create_model("efficientnet_b0", bn_eps=1e-5).eval()
    files = {"ours": export(ours, scratch / "ours.onnx", dynamic_batch=True).path}

    proto = onnx_program(inference_form(ours), torch.randn(1, 3, 224, 224), dynamic_batch=True)
    (scratch / "ours_reducemean.onnx").write_bytes(proto.SerializeToString())
    files["ours_reducemean"] = scratch / "ours_reducemean.onnx"

    gate_first = onnx.load(str(files["ours"]))
    produced = {out: node for node in gate_first.graph.node for out in node.output}
    for node in gate_first.graph.node:
        gate = produced.get(node.input[1]) if node.op_type == "Mul" and len(node.input) == 2 else None
        # SiLU is Mul(x, Sigmoid(x)); the SE gate is Mul(x, Sigmoid(conv(pooled x))): only the latter
        if gate is not None and gate.op_type == "Sigmoid" and gate.input[0] != node.input[0]:
            node.input[0], node.input[1] = node.input[1], node.input[0]
    (scratch / "ours_gate_first.onnx").write_bytes(gate_first.SerializeToString())
    files["ours_gate_first"] = scratch / "ours_gate_first.onnx"

    with_tv = effnet.create_model("efficientnet_b0", bn_eps=1e-5).eval()
    with_tv.load_state_dict(convert_state_dict(tv.state_dict(), "torchvision"))
    files["ours_tv_weights"] = export(with_tv, scratch / "ours_tv_weights.onnx", dynamic_batch=True).path

    (scratch / "torchvision.onnx").write_bytes(onnx_program(tv, torch.randn(1, 3, 224, 224),
                                                            dynamic_batch=True).SerializeToString())  # fmt: skip
    files["torchvision"] = scratch / "torchvision.onnx"

    noise = [np.random.default_rng(i).standard_normal((8, 3, 224, 224)).astype(np.float32) for i in range(4)]
    quantize_onnx(files["ours"], scratch / "ours_int8.onnx", noise)
    files["ours_int8"] = scratch / "ours_int8.onnx"
    files["ours_again"], files["torchvision_again"] = files["ours"], files["torchvision"]
    return files


def runners(files: dict[str, Path], threads: int, precision: str) -> dict:
    out = {}
    for name, path in files.items():
        if precision == "f32":
            session = open_session(onnx.load(str(path)), threads)
            out[f"{name}/onnxruntime"] = lambda x, s=session: s.run(None, {"image": x.numpy()})
        runner = Runner(read_model(path), compile_properties(threads, "latency", precision, None), path)
        out[f"{name}/openvino_{precision}"] = lambda x, r=runner: r.run(x.numpy())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--min-seconds", type=float, default=4.0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 3, 224, 224)
    result = {"command": "python benchmarks/openvino/graph_variants.py --out benchmarks/openvino/graph_variants.json",
              "threads": args.threads, "machine": machine(), "rows": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        files = variants(Path(scratch))
        for precision in ("f32", "bf16"):
            times = time_interleaved(runners(files, args.threads, precision), x, warmup=5, min_runs=30,
                                     min_seconds=args.min_seconds, progress=True, label=precision)  # fmt: skip
            for key, ts in times.items():
                result["rows"].append({"variant": key, "median_ms": round(statistics.median(ts) * 1e3, 3),
                                       "runs": len(ts)})  # fmt: skip
    base = {r["variant"]: r["median_ms"] for r in result["rows"]}["torchvision/onnxruntime"]
    for r in result["rows"]:
        r["vs_torchvision_onnxruntime"] = round(r["median_ms"] / base, 3)
        print(f"{r['variant']:32s} {r['median_ms']:8.2f} ms  {r['vs_torchvision_onnxruntime']:.3f}x")
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
