"""Image classification on the trainer core: the data, the model (from a name, phi or a
weights file to fine-tune), transforms, the teacher when distilling, and ``train()``."""

from __future__ import annotations

import os
from dataclasses import replace

import torch

from effnet.core.errors import UsageError
from effnet.datasets.batched import BatchedImages, applies
from effnet.datasets.loading import ImageDataset, load_data
from effnet.datasets.transforms import train_transform
from effnet.models.preprocessing import Preprocessing
from effnet.models.registry import build_model
from effnet.tasks.classification import ClassificationTask
from effnet.training.config import TrainConfig
from effnet.training.distill import Distillation, load_teacher, teacher_logits, write_teacher_logits
from effnet.training.progressive import Progression, StagedTransform
from effnet.training.run import RunTrainer, resolve_for_run
from effnet.training.rundir import RunDir
from effnet.training.sampling import SeededAugment
from effnet.training.source import WeightsSource
from effnet.training.trainer import Trainer, plan_steps


def build_classifier(cfg: TrainConfig, classes: list[str], source: WeightsSource | None = None) -> torch.nn.Module:
    """The model a run trains: a named or phi-scaled member, or the architecture of ``cfg.weights``
    (``WeightsSource``), with this run's classes, image size and dropout, initialised from the
    file (``WeightsSource.load_into``)."""
    source = source or WeightsSource(cfg)
    arch = source.architecture(cfg)
    dropout = arch.dropout if cfg.dropout is None else cfg.dropout
    config = replace(arch, num_classes=len(classes), features_only=False, resolution=cfg.image_size or arch.resolution,
                     dropout=dropout)  # fmt: skip
    model = source.load_into(build_model(config, class_names=classes))
    # Fine-tuning keeps the weights' own normalisation and interpolation (e.g. [-1, 1] inputs for
    # Lite and AdvProp weights): the family's default would feed them inputs they never saw.
    size, pre = model.config.resolution, (source.model or model).preprocessing
    # The eval transform at the training size (no resize margin: the images are the training
    # images' size), kept in the weights so predict and eval preprocess exactly as validation did.
    model.preprocessing = Preprocessing(resolution=size, resize=size, interpolation=pre.interpolation, mean=pre.mean,
                                        std=pre.std)  # fmt: skip
    return model


class ClassificationTrainer(RunTrainer):
    """``Trainer`` set up for image classification from a ``TrainConfig``."""

    def _set_up(self, cfg: TrainConfig, rundir: RunDir, ranks, device, resume: bool, quiet: bool) -> None:
        torch.manual_seed(cfg.seed)
        self.data = load_data(
            cfg.data,
            data_dir=cfg.data_dir,
            val_split=cfg.val_split,
            seed=cfg.seed,
            limit_train=cfg.limit_train,
            bad_images=cfg.bad_images,
            progress=not quiet and ranks.main,
        )
        plan = plan_steps(len(self.data.split("train")), ranks.world, cfg.batch_size, cfg.accum_steps)
        cfg = resolve_for_run(cfg, rundir, plan, resume)

        model = build_classifier(cfg, self.data.classes).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.set_memory_efficient(cfg.memory_efficient)
        pre = model.preprocessing
        task = ClassificationTask(len(self.data.classes), cfg.label_smoothing)
        epoch_setup = None
        if cfg.progressive:
            transform, epoch_setup = progressive_setup(cfg, model, pre)
        else:
            transform = train_transform(pre, cfg.augment, cfg.randaug, cfg.random_erase)
        plain_train = ImageDataset(self.data.split("train"), transform)
        val_set = ImageDataset(self.data.split("val"), pre.transform())
        train_set, notes = training_images(cfg, self.data.split("train"), plain_train, pre)

        criterion, on_start = None, [lambda rd: rd.report_skipped(self.data.skipped)]
        if cfg.teacher:
            teacher = load_teacher(cfg.teacher, self.data.classes, cfg.data, pre, device, cfg.channels_last)
            logits = None
            if cfg.cache_teacher:
                logits = teacher_logits(teacher, plain_train, rundir, resume=resume, device=device,
                                        channels_last=cfg.channels_last, workers=cfg.workers, quiet=quiet)  # fmt: skip
                on_start.append(lambda rd: write_teacher_logits(rd, logits))
            criterion = Distillation(task, teacher, cfg.kd_temperature, cfg.kd_alpha, logits)
        Trainer.__init__(
            self,
            cfg,
            rundir,
            task=task,
            model=model,
            train_set=train_set,
            val_set=val_set,
            plan=plan,
            ranks=ranks,
            device=device,
            resume=resume,
            quiet=quiet,
            criterion=criterion,
            on_start=on_start,
            epoch_setup=epoch_setup,
            notes=notes,
        )


def training_images(cfg: TrainConfig, split, per_image: ImageDataset, pre: Preprocessing):
    """The training set in the pipeline ``cfg.pipeline`` asks for (auto: batched where it applies)
    and what RUN/runtime.json records of the choice."""
    why_not = applies(split, cfg.augment, cfg.randaug, cfg.random_erase, cfg.progressive)
    if cfg.pipeline == "batched" and why_not:
        raise UsageError(f"--pipeline batched: {why_not}; use --pipeline per-image or auto")
    if cfg.pipeline == "per-image" or why_not:
        return SeededAugment(per_image, cfg.seed), {"pipeline": "per-image", "pipeline_reason": why_not or "requested"}
    return BatchedImages(split, pre, cfg.augment), {"pipeline": "batched"}


def progressive_setup(cfg: TrainConfig, model: torch.nn.Module, pre: Preprocessing):
    """The staged training transform and the per-epoch hook that moves the run through the
    stages: image size and RandAugment in the transform, dropout in the classifier's dropout
    layer. The end values are the run's own (--image-size, --dropout, --randaug)."""
    end_size, end_dropout = model.config.resolution, model.config.dropout
    start_dropout = end_dropout if cfg.start_dropout is None else cfg.start_dropout
    if cfg.start_size > end_size:
        raise UsageError(f"--start-size {cfg.start_size} is larger than the end, the image size {end_size}")
    if start_dropout > end_dropout:
        raise UsageError(f"--start-dropout {start_dropout} is larger than the end, the model's dropout {end_dropout}")
    randaug = None  # no RandAugment ramp without an end magnitude
    if cfg.randaug is not None:
        randaug = (cfg.randaug if cfg.start_randaug is None else cfg.start_randaug, cfg.randaug)
    progression = Progression(cfg.progressive, cfg.epochs, (cfg.start_size, end_size), (start_dropout, end_dropout),
                              randaug)  # fmt: skip

    def build(stage):
        at_size = replace(pre, resolution=stage.image_size, resize=stage.image_size)
        return train_transform(at_size, cfg.augment, stage.randaug, cfg.random_erase)

    transform = StagedTransform(build)

    def epoch_setup(epoch: int) -> dict:
        stage = progression.at(epoch)
        transform.set_stage(stage)
        model.dropout.p = stage.dropout
        return stage.to_row()

    return transform, epoch_setup


def train(cfg: TrainConfig, run: str | os.PathLike, *, resume: bool = False, quiet: bool = False) -> dict:
    """Train a classifier per ``cfg`` into the directory ``run``; returns the last epoch's row."""
    return ClassificationTrainer.run(cfg, run, resume=resume, quiet=quiet)
