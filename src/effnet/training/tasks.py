"""Detection, segmentation and embedding runs on the trainer core: their data, their model on an
EfficientNet trunk (from ``--model``/``--phi``, or the trunk of ``--weights``: a pretrained tag,
a classifier or a model of the same task) and their task. Resume, DDP, EMA, run directories and
reports are the core's, exactly as for classification."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from effnet.core.errors import UsageError
from effnet.datasets.coco import DetectionDataset, load_detection
from effnet.datasets.loading import ImageDataset, load_data
from effnet.datasets.masks import MaskDataset, load_masks
from effnet.datasets.transforms import train_transform
from effnet.models.backbone import backbone_config
from effnet.models.config import ModelConfig
from effnet.models.detection import OUT_INDICES as DETECTION_LEVELS
from effnet.models.detection import anchor_sizes_for, create_detector
from effnet.models.embedding import create_embedder
from effnet.models.preprocessing import Preprocessing
from effnet.models.segmentation import OUT_INDICES as SEGMENTATION_LEVELS
from effnet.models.segmentation import create_segmenter
from effnet.tasks.detection import DetectionTask
from effnet.tasks.embedding import EmbeddingTask
from effnet.tasks.segmentation import SegmentationTask
from effnet.training.config import TrainConfig
from effnet.training.run import RunTrainer, resolve_for_run
from effnet.training.sampling import SeededAugment
from effnet.training.source import WeightsSource
from effnet.training.trainer import Trainer, plan_steps


class TaskRunTrainer(RunTrainer):
    """The set-up the three tasks share; each subclass builds data, model and datasets."""

    def _set_up(self, cfg: TrainConfig, rundir, ranks, device, resume: bool, quiet: bool) -> None:
        torch.manual_seed(cfg.seed)
        self.data = self._load_data(cfg)
        plan = plan_steps(len(self.data.split("train")), ranks.world, cfg.batch_size, cfg.accum_steps)
        cfg = resolve_for_run(cfg, rundir, plan, resume)
        source = WeightsSource(cfg)
        model, task, train_set, val_set = self._build(cfg, source)
        model = source.load_into(model).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.trunk.set_memory_efficient(cfg.memory_efficient)
        Trainer.__init__(self, cfg, rundir, task=task, model=model, train_set=SeededAugment(train_set, cfg.seed),
                         val_set=val_set, plan=plan, ranks=ranks, device=device, resume=resume,
                         quiet=quiet)  # fmt: skip

    def _load_data(self, cfg: TrainConfig):
        raise NotImplementedError

    def _build(self, cfg: TrainConfig, source: WeightsSource):
        raise NotImplementedError


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


class DetectionTrainer(TaskRunTrainer):
    def _load_data(self, cfg: TrainConfig):
        return load_detection(cfg.data, annotations=cfg.annotations, val_split=cfg.val_split, seed=cfg.seed,
                              limit_train=cfg.limit_train)  # fmt: skip

    def _build(self, cfg: TrainConfig, source: WeightsSource):
        train_split = self.data.split("train")
        min_size, max_size, sides = detection_scale(train_split, cfg.image_size)
        trunk = backbone_config(source.architecture(cfg), out_indices=DETECTION_LEVELS)
        if source.whole_fits(self.data.classes):
            config = source.model.config  # continue training a detector of these classes as it is
            model = create_detector(config.backbone, head=config.head, num_classes=len(self.data.classes),
                                    image_size=config.min_size, max_size=config.max_size,
                                    anchor_sizes=config.anchor_sizes, fpn_channels=config.fpn_channels,
                                    class_names=self.data.classes)  # fmt: skip
        else:
            model = create_detector(trunk, head=cfg.detector, num_classes=len(self.data.classes), image_size=min_size,
                                    max_size=max_size, anchor_sizes=anchor_sizes_for(cfg.detector, sides, min_size),
                                    class_names=self.data.classes)  # fmt: skip
        flip = cfg.augment in ("light", "paper")
        train_set = DetectionDataset(train_split, flip=flip)
        val_set = DetectionDataset(self.data.split("val"))
        return model, DetectionTask(self.data.classes), train_set, val_set


class SegmentationTrainer(TaskRunTrainer):
    def _load_data(self, cfg: TrainConfig):
        return load_masks(cfg.data, val_split=cfg.val_split, seed=cfg.seed, limit_train=cfg.limit_train)

    def _build(self, cfg: TrainConfig, source: WeightsSource):
        train_split = self.data.split("train")
        sizes = set(train_split.sizes) | set(self.data.split("val").sizes)
        if cfg.image_size is None and len(sizes) > 1:
            raise UsageError(f"--data {cfg.data}: images of {len(sizes)} sizes; pass --image-size to resize them")
        image_size = cfg.image_size or max(next(iter(sizes)))
        trunk = backbone_config(source.architecture(cfg), out_indices=SEGMENTATION_LEVELS)
        model = create_segmenter(trunk, num_classes=len(self.data.classes), image_size=image_size,
                                 class_names=self.data.classes)  # fmt: skip
        pre = model.preprocessing
        augment = cfg.augment in ("light", "paper")
        train_set = MaskDataset(train_split, pre.mean, pre.std, augment=augment, size=cfg.image_size)
        val_set = MaskDataset(self.data.split("val"), pre.mean, pre.std, size=cfg.image_size)
        return model, SegmentationTask(self.data.classes), train_set, val_set


class EmbeddingTrainer(TaskRunTrainer):
    def _load_data(self, cfg: TrainConfig):
        return load_data(cfg.data, val_split=cfg.val_split, seed=cfg.seed, limit_train=cfg.limit_train,
                         bad_images=cfg.bad_images)  # fmt: skip

    def _build(self, cfg: TrainConfig, source: WeightsSource):
        trunk: ModelConfig = source.architecture(cfg)
        size = cfg.image_size or trunk.resolution
        model = create_embedder(replace(trunk, resolution=size, num_classes=0, features_only=False),
                                num_classes=len(self.data.classes), margin=cfg.arcface_margin,
                                scale=cfg.arcface_scale, class_names=self.data.classes)  # fmt: skip
        pre = model.preprocessing
        model.preprocessing = Preprocessing(size, size, pre.interpolation, pre.mean, pre.std)
        train_set = ImageDataset(self.data.split("train"), train_transform(model.preprocessing, cfg.augment))
        val_set = ImageDataset(self.data.split("val"), model.preprocessing.transform())
        return model, EmbeddingTask(), train_set, val_set


TASK_TRAINERS = {"detection": DetectionTrainer, "segmentation": SegmentationTrainer, "embedding": EmbeddingTrainer}
