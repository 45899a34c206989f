"""Evaluating and running the detection, segmentation and embedding models that ``effnet train``
writes: the data, split, seed and (for detection) annotation file come from the file's training
provenance unless given, exactly as for classifiers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from effnet.core.errors import EffnetError, UsageError
from effnet.core.fileio import atomic_write
from effnet.datasets.coco import DetectionDataset, collate_detection, load_detection
from effnet.datasets.images import decode_each, load_rgb
from effnet.datasets.loading import ImageDataset, load_data, ordered_loader
from effnet.datasets.masks import MaskDataset, load_masks
from effnet.datasets.pairs import read_pairs
from effnet.deploy.runtime import OnnxModel, onnx_metadata, read_onnx
from effnet.tasks.detection import DetectionMetrics
from effnet.tasks.embedding import VerificationMetrics, verification_metrics
from effnet.tasks.segmentation import SegmentationMetrics
from effnet.weights.io import read_metadata
from effnet.weights.trained import Provenance, Trained, load_trained

TASK_MODELS = ("detection", "segmentation", "embedding")


def task_of(model) -> str:
    return getattr(model, "task", "classification")


def _check_classes(model, classes: list[str], weights: str, data: str) -> None:
    if model.class_names is not None and list(model.class_names) != list(classes):
        raise UsageError(f"{weights} was trained on classes {model.class_names[:4]}... but --data {data} has "
                         f"{classes[:4]}...")  # fmt: skip


def task_data(trained: Trained, data: str | None = None, *, split: str = "test", val_split=None, seed=None,
              annotations: str | None = None):  # fmt: skip
    """(dataset, collate function, metrics) of ``split`` of a task model's data, with the inputs its
    model takes: [0, 1] images for a detector, normalised ones at its size for the others."""
    model, weights = trained.model, str(trained.path)
    options = trained.provenance.data_options(data, val_split=val_split, seed=seed, origin=weights)
    options.pop("data_dir")
    task = task_of(model)
    if task == "detection":
        annotations = annotations or trained.provenance.training.get("annotations", "annotations.json")
        bundle = load_detection(**options, annotations=annotations)
        _check_classes(model, bundle.classes, weights, options["data"])
        return DetectionDataset(bundle.split(split)), collate_detection, DetectionMetrics(bundle.classes)
    if task == "segmentation":
        bundle = load_masks(**options)
        _check_classes(model, bundle.classes, weights, options["data"])
        pre = model.preprocessing
        size = trained.provenance.training.get("image_size")
        return MaskDataset(bundle.split(split), pre.mean, pre.std, size=size), None, SegmentationMetrics(bundle.classes)
    if task == "embedding":
        bundle = load_data(**options)
        return ImageDataset(bundle.split(split), model.preprocessing.transform()), None, VerificationMetrics()
    raise UsageError(f"{weights} is a {task} model; this evaluates detection, segmentation and embedding models")


@torch.inference_mode()
def evaluate_task(trained: Trained, data: str | None = None, *, split: str = "test", val_split=None, seed=None,
                  batch_size: int = 32, annotations: str | None = None) -> dict:  # fmt: skip
    """Metrics of a detection, segmentation or embedding model (torch, or its ONNX export) on
    ``split`` of its data."""
    model = trained.model.eval()
    dataset, collate, metrics = task_data(trained, data, split=split, val_split=val_split, seed=seed,
                                          annotations=annotations)  # fmt: skip
    for inputs, targets in ordered_loader(dataset, batch_size, collate_fn=collate):
        metrics.update(model(inputs), targets)
    return {"task": task_of(model), "split": split, **metrics.summary()}


@torch.inference_mode()
def embed_files(model, paths: list[Path], batch_size: int = 64) -> torch.Tensor:
    transform = model.preprocessing.transform()
    out = []
    for start in range(0, len(paths), batch_size):
        batch = torch.stack([transform(load_rgb(p)) for p in paths[start : start + batch_size]])
        out.append(model(batch))
    return torch.cat(out)


def verify_pairs(trained: Trained, pairs_file: str | os.PathLike, people: str | os.PathLike | None = None) -> dict:
    """LFW's protocol on ``pairs_file``: 10-fold accuracy, ROC-AUC and TAR at FAR 1e-2 of the
    cosine similarity between the two embeddings of each pair."""
    model = trained.model.eval()
    if task_of(model) != "embedding":
        raise UsageError(f"{trained.path}: --task verification needs an embedding model, not {task_of(model)}")
    pairs = read_pairs(pairs_file, people)
    unique = sorted(set(pairs.first) | set(pairs.second))
    index = {p: i for i, p in enumerate(unique)}
    embeddings = embed_files(model, unique)
    a = embeddings[[index[p] for p in pairs.first]]
    b = embeddings[[index[p] for p in pairs.second]]
    scores = (a * b).sum(1).numpy()
    result = verification_metrics(scores, np.array(pairs.same), np.array(pairs.fold))
    return {"task": "verification", "images": len(unique), **result}


@dataclass
class DensePrediction:
    image: str
    output: str | None  # the PNG written, if any
    result: dict

    def to_dict(self) -> dict:
        return {"image": self.image, "output": self.output, **self.result}


PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
           "#fabebe", "#008080", "#e6beff", "#9a6324", "#800000", "#aaffc3", "#808000"]  # fmt: skip


def _save_png(tensor: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(tensor.permute(1, 2, 0).numpy())
    atomic_write(path, lambda f: image.save(f, format="PNG"))


@torch.inference_mode()
def predict_dense(trained: Trained, paths: list[str], out_dir: str | None = None, score_threshold: float = 0.5):
    """Boxes (detection), class masks (segmentation) or embeddings per image; with ``out_dir`` the
    boxes or the mask are drawn onto a copy of each image there (``<stem>.png``)."""
    model = trained.model.eval()
    task = task_of(model)
    out = Path(out_dir) if out_dir else None
    results, errors = [], []
    for path, image in decode_each(paths, errors):
        pixels = v2.functional.pil_to_tensor(image)  # uint8 CHW, what the drawing functions take
        target = out / f"{Path(path).stem}.png" if out else None
        if task == "detection":
            found = model([pixels.float() / 255])[0]
            keep = found["scores"] >= score_threshold
            names = model.class_names or [str(k) for k in range(1, model.config.num_classes + 1)]
            detections = [{"label": names[int(lab) - 1], "score": round(float(s), 4),
                           "box": [round(float(v), 1) for v in box]}
                          for box, lab, s in zip(found["boxes"][keep], found["labels"][keep], found["scores"][keep],
                                                 strict=True)]  # fmt: skip
            if target:
                labels = [f"{d['label']} {d['score']:.2f}" for d in detections]
                colors = [PALETTE[(int(lab) - 1) % len(PALETTE)] for lab in found["labels"][keep]]
                drawn = draw_bounding_boxes(pixels, found["boxes"][keep], labels, colors=colors) if labels else pixels
                _save_png(drawn, target)
            result = {"detections": detections}
        elif task == "segmentation":
            pre = model.preprocessing
            x = v2.Normalize(pre.mean, pre.std)(pixels.float() / 255)
            classes = model(x[None])[0].argmax(0)
            names = model.class_names or [str(k) for k in range(model.config.num_classes)]
            counts = torch.bincount(classes.flatten(), minlength=len(names))
            result = {"pixels": {names[k]: int(c) for k, c in enumerate(counts) if c}}
            if target:
                masks = torch.stack([classes == k for k in range(1, len(names))])
                colors = [PALETTE[k % len(PALETTE)] for k in range(len(names) - 1)]
                _save_png(draw_segmentation_masks(pixels, masks, alpha=0.5, colors=colors), target)
        elif task == "embedding":
            embedding = model(model.preprocessing.transform()(image)[None])[0]
            result = {"embedding": [round(float(v), 6) for v in embedding]}
            target = None
        else:
            raise UsageError(f"{trained.path} is a {task} model; use effnet predict without --out")
        results.append(DensePrediction(str(path), str(target) if target else None, result))
    return results, errors


class OnnxTaskModel:
    """An exported detection, segmentation or embedding model on ONNX Runtime, called as the torch
    model is: a list of [0, 1] images for a detector (its graph holds the resize, normalisation
    and NMS, one image per run), a normalised batch for the others."""

    def __init__(self, path: str | os.PathLike, task: str):
        self.onnx, self.task = OnnxModel(path), task
        self.config, self.class_names = self.onnx.config, self.onnx.class_names
        self.preprocessing, self.training = self.onnx.preprocessing, self.onnx.training

    def eval(self) -> OnnxTaskModel:
        return self

    def __call__(self, inputs):
        if self.task == "detection":
            return [self.onnx.detect(image.numpy()) for image in inputs]
        return self.onnx(inputs)


def open_task_model(weights: str) -> Trained | None:
    """The model of a detection, segmentation or embedding file (``.safetensors``, or its ``.onnx``
    export on ONNX Runtime); None for anything else (a classifier, a pretrained tag), which the
    classification path opens."""
    if str(weights).endswith(".onnx") and Path(weights).is_file():
        try:
            task = onnx_metadata(read_onnx(Path(weights))).get("task")
        except EffnetError:
            return None  # a damaged file: the classification path reports it as it always has
        if task not in TASK_MODELS:
            return None
        model = OnnxTaskModel(weights, task)
        return Trained(model, Provenance.from_training(model.training, str(weights)), str(weights))
    if not str(weights).endswith(".safetensors") or not Path(weights).is_file():
        return None
    if read_metadata(weights).get("task") not in TASK_MODELS:
        return None
    return load_trained(weights)
