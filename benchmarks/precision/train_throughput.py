"""Issue 27: where `effnet train`'s time goes against a bare step loop. One process, 2 threads, the
contenders interleaved round by round (fresh processes differ by up to 1.6x here):

* ``torchvision_bare``: torchvision's B0 (10 classes), AdamW, channels_last, fp32 eager, on
  Fashion-MNIST already resized to 64 px and normalized in memory: the reference the issue names.
* ``effnet_bare``: effnet's B0 in the same loop: the model's own cost.
* ``effnet_bare_bf16``: the same in bf16 autocast with fp32 depthwise (``--precision bf16``);
  ``effnet_bare_compiled`` (``--compile``): through ``torch.compile``, compiled in the warm-up.
* ``loader``: effnet train's data pipeline alone (the batches of one epoch, no model).
* ``train:NAME``: one epoch of ``effnet.training.train`` (the Python API under ``effnet train``)
  with the settings in TRAIN_SETTINGS below; its ``images_per_second`` is what the run records
  (data loading included; validation and checkpoints after the epoch are not in it).

    python benchmarks/precision/train_throughput.py --compile --out benchmarks/precision/train_throughput.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

import effnet
from effnet.core.machine import write_report
from effnet.datasets.loading import load_data
from effnet.training.classify import train
from effnet.training.config import TrainConfig
from effnet.training.precision import keep_depthwise_fp32

SIZE, BATCH = 64, 64
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # effnet B0's preprocessing
BASE = dict(model="efficientnet_b0", data="fashion-mnist", image_size=SIZE, batch_size=BATCH, epochs=1,
            opt="adamw", lr=4e-3, val_split=0.01, seed=0)  # fmt: skip
# Each a `effnet train` configuration with the 16-epoch recipe's light augmentation and EMA:
# today's defaults (channels_last, the batched pipeline), each of them undone, and bf16.
TRAIN_SETTINGS = {
    "default": dict(augment="light", ema_decay=0.999),
    "per_image": dict(augment="light", ema_decay=0.999, pipeline="per-image"),
    "before_issue_27": dict(augment="light", ema_decay=0.999, pipeline="per-image", channels_last=False),
    "bf16": dict(augment="light", ema_decay=0.999, precision="bf16"),
}


def in_memory_batches(n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    split = load_data("fashion-mnist", val_split=0.01).split("train")
    images = torch.from_numpy(split.images[: n_batches * BATCH]).unsqueeze(1).float() / 255
    images = F.interpolate(images, size=SIZE, mode="bilinear", antialias=True).expand(-1, 3, -1, -1)
    images = ((images - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]).contiguous(
        memory_format=torch.channels_last
    )
    labels = torch.from_numpy(split.labels[: n_batches * BATCH]).long()
    return [(images[i * BATCH : (i + 1) * BATCH], labels[i * BATCH : (i + 1) * BATCH]) for i in range(n_batches)]


def bare_loop(model: torch.nn.Module, batches, precision: str = "fp32", compile: bool = False) -> callable:
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if precision == "bf16":
        keep_depthwise_fp32(model)
    net = torch.compile(model) if compile else model

    def run() -> float:
        start = time.perf_counter()
        for x, y in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return len(batches) * BATCH / (time.perf_counter() - start)

    return run


def loader_only(n_batches: int, settings: dict) -> callable:
    from effnet.datasets.loading import ImageDataset
    from effnet.datasets.transforms import train_transform
    from effnet.models.preprocessing import Preprocessing
    from effnet.training.sampling import SeededAugment, epoch_loader

    # what build_classifier gives a run at --image-size 64: no resize margin
    pre = Preprocessing(resolution=SIZE, resize=SIZE, interpolation="bicubic", mean=MEAN, std=STD)
    split = load_data("fashion-mnist", val_split=0.01, limit_train=n_batches * BATCH).split("train")
    dataset = SeededAugment(ImageDataset(split, train_transform(pre, settings["augment"])), seed=0)

    def run() -> float:
        start = time.perf_counter()
        for _ in epoch_loader(dataset, seed=0, epoch=0, rank=0, world=1, batch_size=BATCH, batches=n_batches):
            pass
        return n_batches * BATCH / (time.perf_counter() - start)

    return run


def train_epoch(n_batches: int, settings: dict) -> callable:
    def run() -> float:
        cfg = TrainConfig(**BASE, limit_train=n_batches * BATCH, **settings)
        with tempfile.TemporaryDirectory() as folder:
            row = train(cfg, Path(folder) / "run", quiet=True)
        return row["images_per_second"]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="steps per contender and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", default=",".join(TRAIN_SETTINGS), help="TRAIN_SETTINGS entries to run")
    parser.add_argument("--compile", action="store_true", help="also torch.compile's bare loop (minutes to compile)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    batches = in_memory_batches(args.batches)
    torch.manual_seed(0)
    contenders = {
        "torchvision_bare": bare_loop(torchvision.models.efficientnet_b0(num_classes=10), batches),
        "effnet_bare": bare_loop(effnet.create_model("efficientnet_b0", num_classes=10), batches),
        "effnet_bare_bf16": bare_loop(effnet.create_model("efficientnet_b0", num_classes=10), batches, "bf16"),
        **(
            {
                "effnet_bare_compiled": bare_loop(
                    effnet.create_model("efficientnet_b0", num_classes=10), batches, compile=True
                )
            }
            if args.compile
            else {}
        ),  # fmt: skip
        "loader": loader_only(args.batches, TRAIN_SETTINGS["default"]),
        **{f"train:{name}": train_epoch(args.batches, TRAIN_SETTINGS[name]) for name in args.settings.split(",")},
    }
    for run in contenders.values():  # warm-up: oneDNN primitives, the allocator, the page cache
        run()
    rates = {name: [] for name in contenders}
    for r in range(args.rounds):
        for name, run in contenders.items():
            rates[name].append(run())
            print(f"round {r + 1} {name}: {rates[name][-1]:.1f} img/s", file=sys.stderr, flush=True)
    reference = "torchvision_bare"
    rows = {
        name: {
            "images_per_second": round(statistics.median(v), 1),
            "by_round": [round(x, 1) for x in v],
            f"vs_{reference}": round(statistics.median(a / b for a, b in zip(v, rates[reference], strict=True)), 3),
        }
        for name, v in rates.items()
    }
    out = {
        "size": SIZE,
        "batch": BATCH,
        "batches_per_round": args.batches,
        "train_settings": {k: {**BASE, **TRAIN_SETTINGS[k]} for k in args.settings.split(",")},
        "results": rows,
    }
    write_report(out, args.out)


if __name__ == "__main__":
    main()
