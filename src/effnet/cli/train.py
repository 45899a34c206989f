"""``effnet train`` and ``effnet distill``: training runs, resumable, on one process or many."""

from __future__ import annotations

import json
import os
from pathlib import Path

from effnet.cli.common import add_dataclass_options, dataclass_values
from effnet.core.errors import UsageError
from effnet.core.extras import require
from effnet.training.config import TrainConfig

TRAIN_HELP = {
    "task": "classification, detection (COCO folder), segmentation (images/ + masks/) or embedding (ArcFace)",
    "annotations": "detection: the COCO file's name inside --data (or its train/ val/ test/)",
    "detector": "detection head on an FPN: faster_rcnn, fcos or retinanet; or efficientdet (--model "
    "efficientdet_d0..d7x, efficientdet_lite0..lite4, or --phi; --model efficientdet_* implies it)",
    "arcface_margin": "embedding: ArcFace's additive angular margin m, radians",
    "arcface_scale": "embedding: ArcFace's logit scale s",
    "model": "model name (or use --phi)",
    "phi": "compound-scaled B0 with this phi instead of a named model",
    "width": "override the model's width multiplier",
    "depth": "override the model's depth multiplier",
    "weights": "initialise from an effnet weights file or a pretrained tag (lite0); a new classifier if classes differ",
    "finetune": "with --weights: full (everything trains), linear (only the classifier or task head), freeze:K "
    "(stem and the first K stages frozen), bitfit (biases and norms, plus the head) or lora:R (bitfit plus a rank-R "
    "update of every 1x1 conv, merged into the saved weights); default: full",
    "lr_decay": "layer-wise lr decay D in (0, 1]: head at --lr, last stage x D, the one before x D^2, ..., the stem "
    "least; default: 1 (off)",
    "data": "fashion-mnist, digits, or an image folder (train/ and val/ inside, or one class tree)",
    "image_size": "input side (default: the model's resolution)",
    "augment": "paper (random-resized crop, flip, RandAugment), light (padded crop, flip) or none",
    "randaug": "RandAugment magnitude 0-30 (paper augmentation: 9; light gains RandAugment with it)",
    "random_erase": "chance of blanking one random rectangle of a training image (random erasing; timm's --reprob)",
    "progressive": "progressive learning (EfficientNetV2): this many stages from --start-size/--start-dropout/"
    "--start-randaug up to --image-size/--dropout/--randaug",
    "start_size": "progressive: the first stage's image size (the last trains and evaluates at --image-size)",
    "start_dropout": "progressive: the first stage's classifier dropout (the last: --dropout or the model's)",
    "start_randaug": "progressive: the first stage's RandAugment magnitude (the last: --randaug)",
    "opt": "rmsproptf (paper), adamw or sgd",
    "sched": "step (paper: x0.97 every 2.4 epochs) or cosine",
    "lr": "base learning rate (default: per optimizer, x global batch / 256)",
    "checkpoint_every": "also write the resume state every N optimizer steps",
    "precision": "auto (the fastest on this hardware; fp32 on every CPU measured so far), fp32, or bf16 (autocast, "
    "depthwise convolutions in fp32; refused where the CPU has no bf16 instructions); RUN/runtime.json records "
    "the choice",
    "pipeline": "batched (in-memory data, --augment none/light: resized once, augmented a batch at a time), "
    "per-image (torchvision transforms per image) or auto (batched where it applies)",
    "channels_last": "train in the channels-last memory layout (faster for convolutions on CPUs)",
    "compile": "torch.compile the training forward/backward; trains eagerly with a warning if the compiler fails",
    "bad_images": "error: stop on the first bad file; skip: train on the good ones",
    "memory_efficient": "recompute activations in the backward pass (per block): less memory, ~1 extra forward",
    "teacher": "distil from this trained model (an effnet .safetensors file with the same classes)",
    "kd_temperature": "distillation temperature T",
    "kd_alpha": "weight of the distillation term; 1 - kd_alpha weighs the labels",
    "cache_teacher": "run the teacher once over the training images and reuse its logits (needs --augment none)",
}


def read_settings(path: str) -> dict:
    """``--config FILE``: a JSON object of training settings, nested by part (as RUN/config.json
    writes them) or flat; every key must be a setting."""
    from effnet.training.config import flatten

    try:
        settings = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"--config {path}: not a readable JSON file ({exc})") from None
    if not isinstance(settings, dict):
        raise UsageError(f"--config {path}: not a JSON object of settings")
    flat = flatten(settings, f"--config {path}")
    unknown = sorted(set(flat) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise UsageError(f"--config {path}: unknown settings {', '.join(unknown)}")
    return flat


def cmd_train(args) -> int:
    from effnet.training.launch import run_config, train

    given = dataclass_values(args, TrainConfig)
    if args.config:  # the file's settings, under what the command line gives
        given = {**read_settings(args.config), **given}
    if given.get("task", "classification") != "classification":
        require("tasks")
    if ("phi" in given or "weights" in given) and "model" not in given:
        given["model"] = None  # the architecture is --phi's, or the weights' own (a tag: its member)
    row = train(run_config(given, args.out, args.resume), args.out, resume=args.resume, quiet=args.quiet)
    if args.json and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(json.dumps(row, indent=2))
    return 0


def cmd_distill(args) -> int:
    """``effnet train`` with a teacher: the same runs, resume and reports."""
    if args.student is None and getattr(args, "phi", None) is None:
        raise UsageError("give --student NAME|FILE or --phi")
    if args.student is not None:
        if args.student.endswith(".safetensors") or Path(args.student).is_file():
            args.weights, args.model = args.student, None
        else:
            args.model = args.student
    args.teacher, args.kd_temperature, args.kd_alpha = args.teacher_file, args.temperature, args.alpha
    return cmd_train(args)


def _run_options(p) -> None:
    p.add_argument("--config", help="a JSON file of settings (nested as RUN/config.json, or flat); flags override it")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last state")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--json", action="store_true", help="print the last epoch's metrics as JSON")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model; writes config, metrics, weights, plots and resume state")
    add_dataclass_options(p, TrainConfig, TRAIN_HELP)
    _run_options(p)
    p.set_defaults(func=cmd_train, extras=("train",))

    p = sub.add_parser("distill", help="train a student on labels and a teacher's soft outputs (Hinton KD)")
    p.add_argument("--teacher", dest="teacher_file", required=True, help="the trained teacher (.safetensors)")
    p.add_argument("--student", help="a model name (trained from scratch) or a .safetensors file (fine-tuned)")
    p.add_argument("--temperature", type=float, default=4.0, help="softening temperature T (default 4)")
    p.add_argument("--alpha", type=float, default=0.9, help="weight of the distillation term (default 0.9)")
    add_dataclass_options(
        p, TrainConfig, TRAIN_HELP, skip=("model", "weights", "teacher", "kd_temperature", "kd_alpha")
    )
    _run_options(p)
    p.set_defaults(func=cmd_distill, extras=("train",))
