"""Object detection as a task: torchvision's detector losses summed, and COCO's metrics (mAP over
IoU 0.50:0.95, AP50, AP75, per-class AP) computed by pycocotools, the reference implementation."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes

from effnet.core.errors import UsageError
from effnet.datasets.coco import DetectionDataset, collate_detection, load_detection
from effnet.models.backbone import backbone_config
from effnet.models.config import ModelConfig
from effnet.models.detection import OUT_INDICES, anchor_sizes_for
from effnet.models.detection import create_detector as create_torchvision_detector
from effnet.models.efficientdet import EfficientDetConfig
from effnet.models.efficientdet_detector import build_efficientdet, create_efficientdet
from effnet.tasks.choices import EFFICIENTDET_PREFIX
from effnet.tasks.entry import PALETTE, EvalData, TaskEntry, check_classes
from effnet.weights.pretrained import load_pretrained


def create_detector(backbone: str | ModelConfig | None = "efficientnet_b0", *, pretrained: bool | str = False,
                    **kwargs):  # fmt: skip
    """``effnet.tasks.create_detector``: an EfficientDet by name (``efficientdet_d0`` ... ``d7x``,
    ``efficientdet_lite0`` ... ``lite4``; ``pretrained=True`` for its COCO weights, with a fresh
    class layer when ``num_classes``/``class_names`` differ from COCO's), or a torchvision head
    (``head=``) on any EfficientNet trunk (``effnet.models.detection.create_detector``)."""
    if isinstance(backbone, str) and backbone.startswith(EFFICIENTDET_PREFIX):
        if not pretrained:
            return create_efficientdet(backbone, **kwargs)
        model = load_pretrained(backbone if pretrained is True else pretrained)
        if model.config.name != backbone:
            raise UsageError(f"pretrained weights {pretrained} are for {model.config.name}, not {backbone}")
        unknown = sorted(set(kwargs) - {"num_classes", "class_names"})
        if unknown:
            raise UsageError(f"with pretrained weights the detector is the weights' own; cannot also set "
                             f"{', '.join(unknown)}")  # fmt: skip
        names = kwargs.get("class_names")
        classes = kwargs.get("num_classes") or (len(names) if names else model.config.num_classes)
        if classes != model.config.num_classes or names is not None:
            model.reset_classes(classes, names)
        return model.train()
    if pretrained:
        raise UsageError("pretrained=True is for EfficientDet's COCO detectors (efficientdet_d0 ...); a torchvision "
                         "head starts from a pretrained trunk with effnet train --weights")  # fmt: skip
    return create_torchvision_detector(backbone, **kwargs)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    out = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    out[:, 2:] -= out[:, :2]
    return out


def coco_metrics(ground_truth: list[dict], detections: list[dict], classes: list[str]) -> dict:
    """COCO box metrics of ``detections`` against ``ground_truth``: per image dicts of numpy
    ``boxes`` (xyxy), ``labels`` (1..K) and, for detections, ``scores``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for image_id, (gt, dt) in enumerate(zip(ground_truth, detections, strict=True), start=1):
        images.append({"id": image_id})
        for box, label in zip(xyxy_to_xywh(gt["boxes"]), gt["labels"], strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0})  # fmt: skip
        for box, label, score in zip(xyxy_to_xywh(dt["boxes"]), dt["labels"], dt["scores"], strict=True):
            results.append({"image_id": image_id, "category_id": int(label), "bbox": box.tolist(),
                            "score": float(score)})  # fmt: skip
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]
    empty = {"map": 0.0, "ap50": 0.0, "ap75": 0.0, "per_class_ap": dict.fromkeys(classes, 0.0)}
    if not results or not annotations:
        return {**empty, "images": len(images), "objects": len(annotations), "detections": len(results)}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # precision[iou, recall, class, area range, max detections]: area "all", 100 detections
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, name in enumerate(classes):
        values = precision[:, :, k]
        values = values[values > -1]  # -1: no ground truth of this class
        per_class[name] = float(values.mean()) if values.size else float("nan")
    stats = evaluator.stats
    return {
        "map": float(stats[0]),
        "ap50": float(stats[1]),
        "ap75": float(stats[2]),
        "per_class_ap": per_class,
        "images": len(images),
        "objects": len(annotations),
        "detections": len(results),
    }


def to_numpy(prediction: dict) -> dict:
    return {k: v.detach().float().cpu().numpy() if k != "labels" else v.cpu().numpy() for k, v in prediction.items()}


class DetectionMetrics:
    """Collects detections and ground truth over batches; COCO metrics at the end."""

    def __init__(self, classes: list[str]):
        self.classes = classes
        self.ground_truth: list[dict] = []
        self.detections: list[dict] = []

    def update(self, outputs: list[dict], targets: list[dict], loss_sum: float | None = None) -> None:
        for prediction, target in zip(outputs, targets, strict=True):
            self.detections.append(to_numpy({k: prediction[k] for k in ("boxes", "labels", "scores")}))
            self.ground_truth.append(to_numpy(target))

    def summary(self) -> dict:
        result = coco_metrics(self.ground_truth, self.detections, self.classes)
        return {**result, "n": len(self.ground_truth), "score": result["map"]}


class DetectionTask:
    """(images, targets) batches; the detector computes its own losses in training mode."""

    name = "detection"
    val_keys = ("map", "ap50", "ap75")
    val_batch = 16
    collate = staticmethod(collate_detection)

    def __init__(self, classes: list[str]):
        self.classes = classes

    def split_batch(self, batch):
        images, targets = batch
        return images, targets, {}

    def to_device(self, targets: list[dict], device: torch.device) -> list[dict]:
        return [{k: v.to(device) for k, v in t.items()} for t in targets]

    def forward(self, net, images, targets):
        return net(images, targets)

    def loss(self, losses: dict, targets) -> torch.Tensor:
        return sum(v.float() for v in losses.values())

    def train_counts(self, losses: dict, targets: list[dict]) -> dict[str, float]:
        return {"n": len(targets), **{f"loss_{k.removeprefix('loss_')}": v.item() * len(targets)
                                      for k, v in losses.items()}}  # fmt: skip

    def train_summary(self, totals: dict) -> dict:
        n = max(1, totals.get("n", 0))
        return {f"train_{k}": v / n for k, v in sorted(totals.items()) if k.startswith("loss_")}

    def metrics(self) -> DetectionMetrics:
        return DetectionMetrics(self.classes)


def detection_scale(split, image_size: int | None) -> tuple[int, int, list[float]]:
    """(min_size, max_size, object sides at that scale): torchvision resizes each image's short side
    to min_size (the data's median unless --image-size), its long side to at most max_size."""
    shorts = np.array([min(w, h) for w, h in split.sizes], float)
    longs = np.array([max(w, h) for w, h in split.sizes], float)
    min_size = image_size or int(np.median(shorts))
    max_size = int(math.ceil(min(4 * min_size, max(min_size, float(np.max(longs / shorts)) * min_size))))
    sides = []
    for (w, h), boxes in zip(split.sizes, split.boxes, strict=True):
        scale = min_size / min(w, h)
        sides += (np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) * scale).tolist()
    return max(32, min_size), max(32, max_size), sides


def efficientdet_scale(split, image_size: int | None) -> tuple[int, float]:
    """(input side, anchor scale) for EfficientDet on this data: each image is letterboxed to the
    side (the data's median long side, at least 128, unless --image-size), and the anchors are
    sized so that P3's smallest covers the smallest tenth of the objects: COCO's anchor scale of 4
    (32-51 px at P3) would leave the 20-30 px objects of a 128 px canvas matched only by force."""
    longs = np.array([max(w, h) for w, h in split.sizes], float)
    side = image_size or max(128, int(np.median(longs)))
    sides = []
    for (w, h), boxes in zip(split.sizes, split.boxes, strict=True):
        scale = side / max(w, h)
        sides += (np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) * scale).tolist()
    smallest = float(np.percentile(sides, 10)) if sides else 32.0
    return side, float(np.clip(round(smallest / 8, 2), 1.0, 4.0))  # P3's stride is 8 px


class DetectionEntry(TaskEntry):
    """A torchvision detector takes a list of [0, 1] images of any size and resizes them itself."""

    name = "detection"
    per_image = True

    def training_task(self, model, **options) -> DetectionTask:
        return DetectionTask(self._names(model))

    def input_size(self, config) -> tuple[int, int]:
        return config.backbone.in_chans, config.min_size

    def training_data(self, cfg):
        return load_detection(cfg.data, annotations=cfg.annotations, val_split=cfg.val_split, seed=cfg.seed,
                              limit_train=cfg.limit_train)  # fmt: skip

    def training_setup(self, cfg, data, trunk, continuing=None):
        train_split = data.split("train")
        if cfg.detector == "efficientdet":
            model = self._efficientdet(cfg, data.classes, train_split, trunk, continuing)
        elif continuing is not None:
            config = continuing.config  # continue training a detector of these classes as it is
            model = create_torchvision_detector(config.backbone, head=config.head, num_classes=len(data.classes),
                                    image_size=config.min_size, max_size=config.max_size,
                                    anchor_sizes=config.anchor_sizes, fpn_channels=config.fpn_channels,
                                    class_names=data.classes)  # fmt: skip
        else:
            min_size, max_size, sides = detection_scale(train_split, cfg.image_size)
            model = create_torchvision_detector(backbone_config(trunk, out_indices=OUT_INDICES), head=cfg.detector,
                                    num_classes=len(data.classes), image_size=min_size, max_size=max_size,
                                    anchor_sizes=anchor_sizes_for(cfg.detector, sides, min_size),
                                    class_names=data.classes)  # fmt: skip
        train_set = DetectionDataset(train_split, flip=cfg.augment in ("light", "paper"))
        return model, DetectionTask(data.classes), train_set, DetectionDataset(data.split("val"))

    def _efficientdet(self, cfg, classes: list[str], train_split, trunk, continuing):
        if continuing is not None and isinstance(continuing.config, EfficientDetConfig):
            return build_efficientdet(continuing.config, classes)  # continue it as it is
        side, anchor_scale = efficientdet_scale(train_split, cfg.image_size)
        return create_efficientdet(cfg.model, phi=cfg.phi, num_classes=len(classes), image_size=side,
                                   anchor_scale=anchor_scale, class_names=classes,
                                   drop_path_rate=trunk.drop_path_rate, bn_momentum=trunk.bn_momentum)  # fmt: skip

    def eval_data(self, model, options: dict, split: str, training: dict, *, origin: str = "the model",
                  annotations: str | None = None, **kwargs) -> EvalData:  # fmt: skip
        options = {k: v for k, v in options.items() if k != "data_dir"}
        annotations = annotations or training.get("annotations", "annotations.json")
        bundle = load_detection(**options, annotations=annotations)
        check_classes(model, bundle.classes, origin, f"--data {options['data']}")
        return EvalData(DetectionDataset(bundle.split(split)), collate_detection, DetectionMetrics(bundle.classes),
                        bundle.classes)  # fmt: skip

    def preparer(self, model):
        return lambda image, pixels: pixels.float() / 255  # the detector resizes and normalises itself

    def _names(self, model) -> list[str]:
        return model.class_names or [str(k) for k in range(1, model.config.num_classes + 1)]

    def format(self, model, output, *, top_k: int = 5, score_threshold: float = 0.5) -> dict:
        keep = output["scores"] >= score_threshold
        names = self._names(model)
        boxes, labels, scores = output["boxes"][keep], output["labels"][keep], output["scores"][keep]
        return {"detections": [{"label": names[int(lab) - 1], "score": round(float(s), 4),
                                "box": [round(float(v), 1) for v in box]}
                               for box, lab, s in zip(boxes, labels, scores, strict=True)]}  # fmt: skip

    def draw(self, model, pixels: torch.Tensor, output, result: dict) -> torch.Tensor:
        found = result["detections"]
        if not found:
            return pixels
        names = self._names(model)
        boxes = torch.tensor([d["box"] for d in found])
        colors = [PALETTE[names.index(d["label"]) % len(PALETTE)] for d in found]
        return draw_bounding_boxes(pixels, boxes, [f"{d['label']} {d['score']:.2f}" for d in found], colors=colors)


ENTRY = DetectionEntry()
