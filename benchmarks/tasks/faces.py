"""Face vs non-face on scikit-image's lfw_subset (100 + 100 images, 25x25), 5-fold stratified
cross-validation: an effnet classifier fine-tuned from ImageNet Lite0 against HOG features with
logistic regression, on the same folds; ROC-AUC of each fold's held-out images. The classifier's
last epoch is scored (best.safetensors would be chosen on the held-out fold). Usage:

    python benchmarks/tasks/faces.py --work /tmp/faces --out benchmarks/tasks/faces.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from common import effnet
from skimage.feature import hog
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from effnet.core.machine import machine
from effnet.datasets.images import load_rgb
from effnet.weights.trained import load_trained


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    data = args.work / "lfw-faces"
    if not data.exists():
        effnet("data", "make", "lfw-faces", "--out", data, "--json")
    files = sorted((data / "face").glob("*.png")) + sorted((data / "non-face").glob("*.png"))
    labels = np.array([1 if f.parent.name == "face" else 0 for f in files])
    grey = [np.asarray(load_rgb(f).convert("L"), np.float32) / 255 for f in files]
    features = np.stack([hog(g, pixels_per_cell=(5, 5), cells_per_block=(2, 2)) for g in grey])
    folds = StratifiedKFold(5, shuffle=True, random_state=0).split(files, labels)
    rows = []
    for k, (train, test) in enumerate(folds):
        logistic = LogisticRegression(max_iter=2000).fit(features[train], labels[train])
        hog_auc = roc_auc_score(labels[test], logistic.predict_proba(features[test])[:, 1])
        fold = args.work / f"fold{k}"
        for split, index in (("train", train), ("val", test)):
            for i in index:
                target = fold / split / files[i].parent.name / files[i].name
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    target.symlink_to(files[i])
        run = args.work / f"run{k}"
        effnet("train", "--data", fold, "--model", "efficientnet_lite0", "--weights", "lite0", "--image-size",
               args.image_size, "--epochs", args.epochs, "--batch-size", "16", "--out", run, "--quiet")  # fmt: skip
        model = load_trained(run / "last.safetensors").model
        face = model.class_names.index("face")
        with torch.inference_mode():
            batch = torch.stack([model.preprocessing.transform()(load_rgb(files[i])) for i in test])
            prob = model(batch).softmax(1)[:, face].numpy()
        rows.append({"fold": k, "effnet_roc_auc": roc_auc_score(labels[test], prob), "hog_lr_roc_auc": hog_auc})
        print(json.dumps(rows[-1]), flush=True)
    summary = {key: float(np.mean([r[key] for r in rows])) for key in ("effnet_roc_auc", "hog_lr_roc_auc")}
    args.out.write_text(json.dumps({"folds": rows, "mean": summary, "image_size": args.image_size,
                                    "epochs": args.epochs, "machine": machine()}, indent=2) + "\n")  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
