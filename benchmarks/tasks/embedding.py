"""The verification proxy: an ArcFace embedding trained on Fashion-MNIST classes 0-4, verified on
6,000 pairs of the unseen classes 5-9 (LFW's protocol: 10 folds), against three baselines:
raw pixels, pooled ImageNet Lite0 features, and a softmax-trained classifier's pooled features
(same trunk, same images, same epochs as ArcFace). Usage:

    python benchmarks/tasks/embedding.py --work /tmp/emb --per-class 3000 --epochs 3 \
        --out benchmarks/tasks/embedding_proxy.json

The ArcFace probes take its margin, scale and learning rate (the baselines do not change):

    python benchmarks/tasks/embedding.py --work /tmp/emb --per-class 3000 --epochs 3 \
        --arcface-margin 0.2 --arcface-scale 16 --lr 1e-3 --out benchmarks/tasks/embedding_arcface_m0.2_s16.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import effnet, timed
from PIL import Image

from effnet.core.machine import machine
from effnet.datasets.images import load_rgb
from effnet.datasets.pairs import read_pairs
from effnet.models.preprocessing import Preprocessing
from effnet.tasks.embedding import verification_metrics
from effnet.weights.pretrained import load_pretrained
from effnet.weights.trained import load_trained


@torch.inference_mode()
def pooled(model, transform, paths: list[Path]) -> torch.Tensor:
    out = []
    for start in range(0, len(paths), 256):
        batch = torch.stack([transform(load_rgb(p)) for p in paths[start : start + 256]])
        out.append(F.normalize(model.forward_head(model.forward_features(batch), pre_logits=True), dim=1))
    return torch.cat(out)


def verify(embeddings: torch.Tensor, index: dict, pairs) -> dict:
    a = embeddings[[index[p] for p in pairs.first]]
    b = embeddings[[index[p] for p in pairs.second]]
    return verification_metrics((a * b).sum(1).numpy(), np.array(pairs.same), np.array(pairs.fold))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--per-class", type=int, default=3000)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--weights", default="lite0")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--arcface-margin", type=float, help="default: effnet train's")
    p.add_argument("--arcface-scale", type=float, help="default: effnet train's")
    p.add_argument("--lr", type=float, help="the ArcFace run's learning rate (default: the recipe's)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    probe = []  # the ArcFace run's own options
    for flag, value in (("--arcface-margin", args.arcface_margin), ("--arcface-scale", args.arcface_scale),
                        ("--lr", args.lr)):  # fmt: skip
        probe += [flag, value] if value is not None else []

    data = args.work / "fmnist-pairs"
    if not data.exists():
        effnet("data", "make", "fmnist-pairs", "--out", data, "--per-class", args.per_class, "--json")
    common = ["--model", args.model, "--weights", args.weights, "--data", data / "train" / "people", "--image-size",
              args.image_size, "--epochs", args.epochs, "--json", "--quiet"]  # fmt: skip
    arc_run, soft_run = args.work / "arcface", args.work / "softmax"
    _, arc_s = timed("train", "--task", "embedding", *common, *probe, "--out", arc_run)
    _, soft_s = timed("train", *common, "--out", soft_run)
    arcface, _ = timed("eval", "--weights", arc_run / "best.safetensors", "--pairs", data / "test" / "pairs.txt",
                       "--json")  # fmt: skip

    pairs = read_pairs(data / "test" / "pairs.txt")
    unique = sorted(set(pairs.first) | set(pairs.second))
    index = {path: i for i, path in enumerate(unique)}
    pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("L"), np.float32).ravel())
                          for f in unique])  # fmt: skip
    results = {"arcface": arcface, "raw_pixels": verify(F.normalize(pixels - pixels.mean(0), dim=1), index, pairs)}
    imagenet = load_pretrained("lite0")
    for side in (args.image_size, 224):
        pre = Preprocessing(side, side, "bicubic", imagenet.preprocessing.mean, imagenet.preprocessing.std)
        results[f"imagenet_lite0_pooled_{side}px"] = verify(pooled(imagenet, pre.transform(), unique), index, pairs)
    softmax = load_trained(soft_run / "best.safetensors").model
    results["softmax_pooled"] = verify(pooled(softmax, softmax.preprocessing.transform(), unique), index, pairs)
    summary = {k: {m: v[m] for m in ("accuracy", "roc_auc", "tar_at_far_1e-2")} for k, v in results.items()}
    out = {"per_class": args.per_class, "model": args.model, "weights": args.weights, "image_size": args.image_size,
           "epochs": args.epochs, "arcface_options": [str(v) for v in probe],
           "train_seconds": {"arcface": round(arc_s, 1), "softmax": round(soft_s, 1)},
           "summary": summary, "results": results, "machine": machine()}  # fmt: skip
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
