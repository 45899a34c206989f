"""Training settings: everything needed to repeat a run, written to RUN/config.json.

Free of heavy imports, so that the CLI builds its options from these fields before torch loads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from effnet.core.errors import UsageError
from effnet.datasets.choices import AUGMENTATIONS, BAD_IMAGE_POLICIES
from effnet.models.scaling import PHI_BASELINES
from effnet.tasks.choices import DETECTOR_HEADS, EFFICIENTDET_PREFIX
from effnet.tasks.registry import registration, task_names

OPTIMIZERS = ("rmsproptf", "adamw", "sgd")
SCHEDULES = ("step", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")  # effnet.training.precision resolves auto
# How training images become batches (effnet.datasets.batched): auto takes batched where it applies.
PIPELINES = ("auto", "batched", "per-image")
RECIPES = ("auto", "paper", "short")
# What a run from pretrained weights trains (effnet.training.finetune): all, the task head on a
# frozen trunk, all but the stem and the first K stages, only biases and norms (BitFit), or those
# plus a rank-R update of every 1x1 conv (LoRA).
FINETUNE_MODES = ("full", "linear", "freeze:K", "bitfit", "lora:R")

# Learning rate per 256 images for each optimizer, when neither --lr nor a recipe sets it.
BASE_LR = {"rmsproptf": 0.016, "adamw": 1e-3, "sgd": 0.1}

# The paper's ImageNet recipe (TF reference): ~110k steps of batch 4096 over 350 epochs. Its
# 0.9999 EMA averages over 10k steps, its BN momentum 0.01 over 100, its warm-up lasts 5 epochs
# and RandAugment and stochastic depth regularise a model that sees each image 350 times. Runs a
# hundred times shorter learn nothing with it: the EMA still holds the random init at the end.
PAPER = dict(
    opt="rmsproptf",
    lr_per_256=0.016,
    sched="step",
    warmup_epochs=5.0,
    weight_decay=1e-5,
    augment="paper",
    ema_decay=0.9999,
    drop_path_rate=0.2,
    bn_momentum=0.01,
)

# Runs of minutes to hours: AdamW + cosine converge in a few epochs; the EMA horizon is a tenth of
# the run. lr 4e-3 at batch 64 is the best of the Fashion-MNIST probes (benchmarks/README.md) and
# of 2e-3 / 4e-3 / 8e-3 on digits. Measured with only --model/--data/--epochs given
# (benchmarks/short_recipe.md):
# * no augmentation: a few epochs underfit, and the padded crop + flip of --augment light slows
#   them down (B0, digits, 2 epochs: 30% test top-1 with it, 86% without; phi -3, Fashion-MNIST
#   8k images, 2 epochs: 72% against 82% validation). Runs of LIGHT_AUGMENT_MIN_EPOCHS epochs or
#   more see each image often enough to overfit and get --augment light (the 16-epoch
#   Fashion-MNIST benchmark, 93.2%, used it; benchmarks/README.md).
# * BN momentum 0.3: in runs under 100 steps (no EMA) the running statistics of momentum 0.1 lag
#   the weights, which still move fast, and B0's evaluation falls far behind its training accuracy
#   (digits, 40 steps, 3 seeds: 64-75% test top-1 at 0.1, 86-88% at 0.3). Longer runs evaluate
#   the EMA, which averages the statistics too: there 0.1 and 0.3 gave the same accuracy.
SHORT = dict(
    opt="adamw",
    lr_per_256=0.016,
    sched="cosine",
    warmup_epochs=1.0,
    weight_decay=0.01,
    augment=None,  # derived from the run's length: none, or light from LIGHT_AUGMENT_MIN_EPOCHS on
    ema_decay=None,  # derived from the run's length (ema_for_steps)
    drop_path_rate=0.0,
    bn_momentum=0.3,
)
RECIPE_PRESETS = {"paper": PAPER, "short": SHORT}
LIGHT_AUGMENT_MIN_EPOCHS = 10
# recipe=auto takes the paper's recipe from this many optimizer steps on (its own run is ~110k).
PAPER_MIN_STEPS = 100_000

# What the search, the scaling study, pruning's fine-tuning and the compression pipeline train
# with: the short recipe without EMA (their runs are a few hundred steps).
SHORT_RUN = dict(
    recipe="short",
    opt="adamw",
    weight_decay=0.01,
    sched="cosine",
    augment="light",
    ema_decay=0.0,
    drop_path_rate=0.0,
    bn_momentum=0.1,
    channels_last=True,
)


def ema_for_steps(total_steps: int) -> float:
    """An EMA whose horizon (1 / (1 - decay)) is a tenth of the run, at most the paper's 0.9999;
    none for runs under 100 steps, where there is nothing worth averaging."""
    if total_steps < 100:
        return 0.0
    return min(0.9999, 1.0 - 10.0 / total_steps)


# The five parts of a run's settings, each field in exactly one (a test checks the partition):
# what is trained, on what data with which augmentation, for which task (its loss and options),
# how it is optimised (effnet.training.fit's Recipe), and where it runs (fit's Runtime).
# `finetune` is the model's: it says which of the model's tensors train, it needs the model's
# `weights`, and `effnet.fit`, which takes a module the user built and froze as they wished,
# has no use for it. `lr_decay` is the recipe's: like the schedule it only scales learning rates
# (per part), and fit applies it to any EfficientNet (or task model on one) it is given.
# RUN/config.json and `effnet train --config FILE` hold them nested; the flags and the training
# provenance inside weights files keep the flat names.
PARTS = {
    "model": ("model", "phi", "width", "depth", "weights", "finetune", "image_size", "dropout", "drop_path_rate",
              "bn_momentum", "memory_efficient"),
    "data": ("data", "data_dir", "val_split", "limit_train", "bad_images", "augment", "randaug", "random_erase",
             "pipeline", "progressive", "start_size", "start_dropout", "start_randaug"),
    "task": ("task", "annotations", "detector", "arcface_margin", "arcface_scale", "label_smoothing", "teacher",
             "kd_temperature", "kd_alpha", "cache_teacher"),
    "recipe": ("epochs", "batch_size", "recipe", "opt", "lr", "lr_decay", "sched", "warmup_epochs", "decay_rate",
               "decay_epochs", "weight_decay", "ema_decay", "clip_grad", "accum_steps", "seed", "precision"),
    "runtime": ("device", "workers", "channels_last", "compile", "checkpoint_every"),
}  # fmt: skip


def finetune_mode(text: str) -> tuple[str, int | None]:
    """``--finetune``'s value as (mode, N): ("freeze", K) for ``freeze:K``, ("lora", R) for
    ``lora:R``, (mode, None) else."""
    name, sep, k = str(text).partition(":")
    if name == "freeze" and sep and k.isdigit():
        return name, int(k)
    if name == "lora" and sep and k.isdigit() and int(k) > 0:
        return name, int(k)
    if not sep and name in FINETUNE_MODES:
        return name, None
    raise UsageError(f"--finetune must be one of {', '.join(FINETUNE_MODES)} (K: how many stages after the stem "
                     f"stay frozen; R >= 1: the rank of each 1x1 conv's update), got {text!r}")  # fmt: skip


def is_nested(d: dict) -> bool:
    """Settings grouped by part (a flat dict has "recipe" as a string, never a dict)."""
    return any(isinstance(d.get(part), dict) for part in PARTS)


def flatten(d: dict, origin: str = "settings") -> dict:
    """Nested settings ({"model": {...}, "recipe": {...}, ...}) as flat ones; flat ones as they are.
    A key that is not a part, or a setting under the wrong part, is named."""
    if not is_nested(d):
        return dict(d)
    flat = {}
    for part, values in d.items():
        if part not in PARTS or not isinstance(values, dict):
            raise UsageError(f"{origin}: {part!r} is not one of the parts {', '.join(PARTS)}")
        for key, value in values.items():
            if key not in PARTS[part]:
                home = next((p for p, names in PARTS.items() if key in names), None)
                where = f" (it belongs to {home!r})" if home else ""
                raise UsageError(f"{origin}: {part}.{key} is not a setting of {part!r}{where}")
            flat[key] = value
    return flat


@dataclass
class TrainConfig:
    """Everything needed to repeat a run; written to RUN/config.json, grouped by ``PARTS``."""

    task: str = "classification"  # or detection, segmentation, embedding (effnet.tasks)
    model: str | None = "efficientnet_b0"  # None with --weights: the file's architecture (e.g. pruned)
    phi: float | None = None  # compound-scaled baseline (--model, default B0) instead of a named model
    # Explicit multipliers override the model's (the scaling search and study train such models).
    width: float | None = None
    depth: float | None = None
    weights: str | None = None  # initialise from a weights file or pretrained tag (fine-tuning)
    # What of the pretrained model trains (FINETUNE_MODES; effnet.training.finetune): a linear
    # probe or a few top stages need far less data and time than the whole model, and keep more
    # of what the weights learnt when the new data set is small.
    finetune: str = "full"
    data: str = "digits"  # fashion-mnist, digits, or an image folder
    data_dir: str | None = None
    annotations: str = "annotations.json"  # detection: the COCO file's name in the data folder(s)
    # detection: faster_rcnn, fcos or retinanet on an FPN, or efficientdet (--model efficientdet_d0..lite4,
    # or --phi by EfficientDet's own rule)
    detector: str = "faster_rcnn"
    arcface_margin: float = 0.5  # embedding: ArcFace's additive angular margin m (radians)
    arcface_scale: float = 30.0  # embedding: ArcFace's logit scale s
    val_split: float = 0.1
    limit_train: int | None = None
    bad_images: str = "error"
    image_size: int | None = None  # None: the model's resolution
    # Settings left at None come from the recipe (see PAPER and SHORT above).
    recipe: str = "auto"  # auto: paper for runs of >= PAPER_MIN_STEPS optimizer steps, else short
    augment: str | None = None  # paper | light | none (see datasets.transforms)
    randaug: int | None = None  # RandAugment's magnitude (0-30): paper's is 9; light adds RandAugment
    # Random erasing (Zhong et al., 2017; timm's --reprob): the chance that a training image gets
    # one random rectangle blanked to the mean. Its paper's gains were largest on Fashion-MNIST.
    random_erase: float = 0.0
    # batched: in-memory images (fashion-mnist, digits) kept as one uint8 tensor at the training
    # size and augmented a batch at a time (--augment none or light); per-image: torchvision's
    # transforms on each image in the loader; auto: batched wherever it applies.
    pipeline: str = "auto"
    # Progressive learning with adaptive regularization (EfficientNetV2, Algorithm 1): the epochs
    # are cut into `progressive` stages; stage i of M trains at start + (end - start) * i / (M - 1)
    # of the image size, the dropout and the RandAugment magnitude, whose end values are the
    # run's --image-size, --dropout and --randaug. Evaluation is always at the end size.
    progressive: int | None = None
    start_size: int | None = None
    start_dropout: float | None = None
    start_randaug: int | None = None
    epochs: int = 10
    batch_size: int = 64  # per process
    seed: int = 0
    opt: str | None = None
    lr: float | None = None  # None: the recipe's lr per 256 images x global batch / 256
    # Layer-wise lr decay (BEiT): the head trains at lr, the last stage at lr x D, the one before
    # at lr x D^2, ..., the stem at the least; pretrained low-level features move least. 1: off.
    lr_decay: float = 1.0
    sched: str | None = None
    warmup_epochs: float | None = None  # capped at a fifth of the run, so short runs still decay
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    weight_decay: float | None = None
    label_smoothing: float = 0.1
    ema_decay: float | None = None  # 0 disables the weight EMA
    drop_path_rate: float | None = None
    dropout: float | None = None  # None: the variant's
    # TF's BN decay 0.99 (momentum 0.01) needs a few hundred steps to settle its running
    # statistics; the short recipe's 0.1 settles in tens.
    bn_momentum: float | None = None
    # auto: the fastest on this hardware (effnet.training.precision's table: fp32 on every CPU
    # measured so far); bf16: autocast with fp32 master weights, optimizer state and EMA.
    precision: str = "auto"
    # channels_last: 1.35x the images per second of the default layout for B0 at 64 px on this
    # CPU (benchmarks/precision/train_throughput.json), so it is the default.
    channels_last: bool = True
    compile: bool = False  # torch.compile the model's forward and backward; falls back to eager with a warning
    memory_efficient: bool = False  # activation checkpointing per block: ~40% less peak memory
    # Knowledge distillation (Hinton et al., 2015): a trained teacher's softened outputs join
    # the labels. loss = kd_alpha * T^2 * KL(teacher_T || student_T) + (1 - kd_alpha) * CE.
    teacher: str | None = None
    kd_temperature: float = 4.0
    kd_alpha: float = 0.9
    # Run the teacher once over the training images and reuse its logits every epoch
    # (RUN/teacher_logits.safetensors). Exact only without augmentation: an augmented image is
    # not the image the teacher's logits were computed on.
    cache_teacher: bool = False
    clip_grad: float | None = None
    accum_steps: int = 1
    checkpoint_every: int = 0  # steps; 0: only at the end of each epoch
    workers: int = 0
    device: str = "auto"  # auto: CUDA when available (one GPU per torchrun process), else CPU

    def __post_init__(self):
        self._check_efficientdet()
        if self.model is not None and self.phi is not None and self.model not in PHI_BASELINES:
            raise UsageError(f"--phi scales a baseline ({', '.join(PHI_BASELINES)}), not --model {self.model}")
        if self.model is None and self.phi is None and not self.weights:
            raise UsageError("give --model, --phi, or --weights FILE to take the architecture from")
        checks = [
            ("epochs", self.epochs >= 1),
            ("seed", 0 <= self.seed < 2**32),
            ("val_split", 0.0 < self.val_split < 1.0),
            ("batch_size", self.batch_size >= 1),
            ("accum_steps", self.accum_steps >= 1),
            ("checkpoint_every", self.checkpoint_every >= 0),
            ("workers", self.workers >= 0),
            ("label_smoothing", 0.0 <= self.label_smoothing < 1.0),
            ("random_erase", 0.0 <= self.random_erase <= 1.0),
            ("ema_decay", self.ema_decay is None or 0.0 <= self.ema_decay < 1.0),
            ("bn_momentum", self.bn_momentum is None or 0.0 < self.bn_momentum <= 1.0),
            ("weight_decay", self.weight_decay is None or self.weight_decay >= 0.0),
            ("warmup_epochs", self.warmup_epochs is None or self.warmup_epochs >= 0.0),
            ("drop_path_rate", self.drop_path_rate is None or 0.0 <= self.drop_path_rate < 1.0),
            ("dropout", self.dropout is None or 0.0 <= self.dropout < 1.0),
            ("decay_rate", 0.0 < self.decay_rate <= 1.0),
            ("decay_epochs", self.decay_epochs > 0.0),
            ("image_size", self.image_size is None or 8 <= self.image_size <= 4096),
            ("lr", self.lr is None or (math.isfinite(self.lr) and self.lr > 0)),
            ("lr_decay", 0.0 < self.lr_decay <= 1.0),
            ("clip_grad", self.clip_grad is None or self.clip_grad > 0),
            ("kd_temperature", math.isfinite(self.kd_temperature) and self.kd_temperature > 0),
            ("kd_alpha", 0.0 <= self.kd_alpha <= 1.0),
            ("arcface_margin", 0.0 <= self.arcface_margin < math.pi / 2),
            ("arcface_scale", math.isfinite(self.arcface_scale) and self.arcface_scale > 0),
        ]
        for name, ok in checks:
            if not ok:
                raise UsageError(f"--{name.replace('_', '-')}={getattr(self, name)!r} is out of range")
        self._check_progressive()
        self._check_finetune()
        if self.task != "classification" and self.teacher:
            raise UsageError(f"distillation is for classification; --task {self.task} cannot take a teacher")
        if (
            self.task in task_names()
            and registration(self.task).needs_folder
            and self.data in ("digits", "fashion-mnist")
        ):
            raise UsageError(f"--task {self.task} needs --data FOLDER (see effnet data make)")
        if self.cache_teacher and not self.teacher:
            raise UsageError("--cache-teacher needs a teacher (effnet distill --teacher FILE)")
        if self.cache_teacher and self.augment not in (None, "none"):
            raise UsageError(
                f"--cache-teacher needs --augment none: the cached logits are the teacher's on the un-augmented "
                f"images, and --augment {self.augment} would train the student on other images"
            )
        choices = (("opt", OPTIMIZERS), ("sched", SCHEDULES), ("precision", PRECISIONS), ("augment", AUGMENTATIONS),
                   ("pipeline", PIPELINES),
                   ("bad_images", BAD_IMAGE_POLICIES), ("recipe", RECIPES), ("task", task_names()),
                   ("detector", DETECTOR_HEADS))  # fmt: skip
        for name, allowed in choices:
            if getattr(self, name) is not None and getattr(self, name) not in allowed:
                raise UsageError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def _check_efficientdet(self) -> None:
        """``--model efficientdet_d0`` names a detector, not a trunk: it implies ``--detector
        efficientdet``; ``--detector efficientdet`` alone means D0, with ``--phi`` the paper's rule."""
        named = (self.model or "").startswith(EFFICIENTDET_PREFIX)
        if not named and self.detector != "efficientdet":
            return
        if self.task != "detection":
            raise UsageError(f"--model {self.model} is an EfficientDet detector: train it with --task detection")
        if self.detector not in ("faster_rcnn", "efficientdet"):  # faster_rcnn: the default, left as it was
            raise UsageError(f"--model {self.model} is an EfficientDet: leave out --detector {self.detector}")
        self.detector = "efficientdet"
        if self.phi is not None and named:
            raise UsageError("give an EfficientDet by --model efficientdet_NAME or by --phi, not both")
        if not named:
            self.model = None if self.phi is not None else "efficientdet_d0"

    def _check_finetune(self) -> None:
        mode, _ = finetune_mode(self.finetune)
        if mode != "full" and not self.weights:
            raise UsageError(f"--finetune {self.finetune} trains part of a pretrained model: give --weights FILE or a "
                             "pretrained tag")  # fmt: skip
        if mode == "linear" and self.lr_decay != 1.0:
            raise UsageError("--lr-decay has nothing to decay under --finetune linear: only the task head trains")

    def _check_progressive(self) -> None:
        for name in ("randaug", "start_randaug"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 30:
                raise UsageError(f"--{name.replace('_', '-')} must be a RandAugment magnitude in 0..30, got {value}")
        starts = [n for n in ("start_size", "start_dropout", "start_randaug") if getattr(self, n) is not None]
        if self.progressive is None:
            if starts:
                raise UsageError(f"--{starts[0].replace('_', '-')} needs --progressive STAGES")
            return
        if self.cache_teacher:
            raise UsageError("--cache-teacher cannot follow --progressive: the cached logits are the teacher's on "
                             "images of one size, and the stages change the size")  # fmt: skip
        if not 1 <= self.progressive <= self.epochs:
            raise UsageError(f"--progressive must be a number of stages from 1 to --epochs ({self.epochs}), "
                             f"got {self.progressive}")  # fmt: skip
        if self.start_size is None:
            raise UsageError("--progressive needs --start-size PX, the first stage's image size")
        if self.start_size < 8:
            raise UsageError(f"--start-size must be at least 8 pixels, got {self.start_size}")
        if self.start_randaug is not None and self.randaug is None:
            raise UsageError("--start-randaug needs --randaug, the last stage's magnitude")
        if self.start_dropout is not None and not 0.0 <= self.start_dropout < 1.0:
            raise UsageError(f"--start-dropout must be in [0, 1), got {self.start_dropout}")
        ends = (("start_size", "image_size"), ("start_dropout", "dropout"), ("start_randaug", "randaug"))
        for start, end in ends:
            first, last = getattr(self, start), getattr(self, end)
            if first is not None and last is not None and first > last:
                raise UsageError(f"--{start.replace('_', '-')} {first} is larger than the end, "
                                 f"--{end.replace('_', '-')} {last}")  # fmt: skip

    def to_dict(self, nested: bool = False) -> dict:
        """The settings, flat (the flags' names) or grouped by part (``PARTS``)."""
        flat = asdict(self)
        if not nested:
            return flat
        return {part: {k: flat[k] for k in names} for part, names in PARTS.items()}

    def resolved(self, steps_per_epoch: int, global_batch: int) -> TrainConfig:
        """Every setting left at None filled from the recipe, for a run of ``steps_per_epoch``
        optimizer steps of ``global_batch`` images. Resolving a resolved config changes nothing,
        so a resumed run compares equal to its RUN/config.json."""
        total = self.epochs * steps_per_epoch
        name = self.recipe if self.recipe != "auto" else ("paper" if total >= PAPER_MIN_STEPS else "short")
        preset = RECIPE_PRESETS[name]
        filled = {k: preset[k] for k in preset if k != "lr_per_256" and getattr(self, k) is None}
        if "ema_decay" in filled and filled["ema_decay"] is None:
            filled["ema_decay"] = ema_for_steps(total)
        if "augment" in filled and filled["augment"] is None:
            filled["augment"] = "light" if self.epochs >= LIGHT_AUGMENT_MIN_EPOCHS else "none"
        if self.lr is None:
            per_256 = preset["lr_per_256"] if self.opt in (None, preset["opt"]) else BASE_LR[self.opt]
            filled["lr"] = per_256 * global_batch / 256
        if self.cache_teacher and self.augment is None:
            filled["augment"] = "none"  # the only augmentation cached teacher logits allow
        return replace(self, recipe=name, **filled)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From flat or nested settings; keys of settings this version no longer has are left out
        (a run written by an older effnet still resumes)."""
        known = {f.name for f in fields(cls)}
        if is_nested(d):
            d = {k: v for values in d.values() if isinstance(values, dict) for k, v in values.items()}
        if "amp" in d and "precision" not in d:
            # Written before --precision (as --amp none|bf16) and the batched pipeline: such a
            # run resumes as it trained, with per-image transforms.
            d = {"pipeline": "per-image", **d, "precision": "fp32" if d["amp"] == "none" else d["amp"]}
        return cls(**{k: v for k, v in d.items() if k in known})
