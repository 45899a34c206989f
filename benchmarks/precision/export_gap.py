"""Issue 27: is effnet's export of B0 slower than torchvision's on ONNX Runtime and OpenVINO?

Earlier single-session runs put effnet's file 1.04-1.24x behind torchvision's on ONNX Runtime, but
two sessions of one and the same file differ by up to 5% depending on when they were opened. So
this opens ``--sessions`` sessions of each file per engine, alternating, times all of them in one
rotation, and reports the ratio of the files' medians (over their sessions) next to the spread
between sessions of the same file: a gap smaller than that spread is not a property of the file.

    python benchmarks/precision/export_gap.py --out benchmarks/precision/export_gap.json

Run it alone on the machine (about five minutes).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import onnx
import torch

from effnet import create_model
from effnet.core.machine import write_report
from effnet.deploy.bench import _torchvision_model, _torchvision_proto, time_interleaved
from effnet.deploy.export import export
from effnet.deploy.openvino import Runner, compile_properties, read_model
from effnet.deploy.runtime import open_session


def runners(files: dict[str, Path], sessions: int, threads: int, hint: str) -> dict[str, object]:
    out = {}
    for k in range(sessions):  # alternate, so neither file always gets the first sessions
        for name, path in files.items():
            # both files through the same calls (torchvision's has no effnet metadata to read)
            ort = open_session(onnx.load(str(path)), threads)
            out[f"{name}_onnxruntime_{k}"] = lambda x, s=ort: s.run(None, {"image": x.numpy()})
            ov = Runner(read_model(path), compile_properties(threads, hint, "f32", None), path)
            out[f"{name}_openvino_{k}"] = lambda x, r=ov: r.run_batch(x.numpy())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    result: dict = {"model": "efficientnet_b0", "image_size": 224, "sessions_per_file": args.sessions}
    result["batches"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"effnet": Path(tmp) / "effnet.onnx", "torchvision": Path(tmp) / "torchvision.onnx"}
        export(create_model("efficientnet_b0"), files["effnet"], image_size=224, dynamic_batch=True)
        tv = _torchvision_proto(_torchvision_model("efficientnet_b0"), 224)
        files["torchvision"].write_bytes(tv.SerializeToString())
        for batch, hint in ((1, "latency"), (32, "throughput")):
            run = runners(files, args.sessions, args.threads, hint)
            x = torch.randn(batch, 3, 224, 224)
            times = time_interleaved(run, x, warmup=3, min_runs=30 if batch == 1 else 8, min_seconds=2.0,
                                     progress=True, label=f"batch {batch}")  # fmt: skip
            per_session = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            engines = {}
            for engine in ("onnxruntime", "openvino"):
                ms = {name: [per_session[f"{name}_{engine}_{k}"] for k in range(args.sessions)] for name in files}
                median = {name: statistics.median(v) for name, v in ms.items()}
                engines[engine] = {
                    "session_ms": {name: [round(v, 3) for v in vs] for name, vs in ms.items()},
                    "median_ms": {name: round(v, 3) for name, v in median.items()},
                    "effnet_vs_torchvision": round(median["effnet"] / median["torchvision"], 3),
                    # the noise floor: the slowest session of a file over its fastest
                    "same_file_spread": round(max(max(v) / min(v) for v in ms.values()), 3),
                }
                row = engines[engine]
                print(f"batch {batch} {engine}: effnet/torchvision {row['effnet_vs_torchvision']} (sessions of "
                      f"one file spread {row['same_file_spread']}x) {row['session_ms']}")  # fmt: skip
            result["batches"][str(batch)] = {"openvino_hint": hint, **engines}
    write_report(result, args.out)


if __name__ == "__main__":
    main()
