"""``effnet data check``: every file of a training tree that cannot be used, with the reason."""

from __future__ import annotations

import json
import sys

from effnet.cli.common import positive_int
from effnet.core.extras import require


def cmd_data_check(args) -> int:
    from effnet.datasets.check import check_tree

    report = check_tree(args.path, progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for bad in report.bad:
            print(f"BAD  {bad['path']}: {bad['reason']}")
        print(f"{len(report.good)} good, {len(report.bad)} bad")
    return 1 if report.bad else 0


DATASETS = ("fmnist-det", "fmnist-seg", "nuclei", "lfw-faces", "fmnist-pairs")
MAKE_HELP = """fmnist-det / fmnist-seg: Fashion-MNIST items on 128 px canvases (COCO boxes / PNG masks) with
train/, val/ and a fixed test/; nuclei: the 2018 DSB nuclei image from the stardist wheel, split
by columns; lfw-faces: scikit-image's 100 faces and 100 non-faces; fmnist-pairs: the verification
proxy (classes 0-4 to train, unseen 5-9 with an LFW-style pairs.txt)."""


def cmd_data_make(args) -> int:
    from effnet.datasets import make

    progress = not args.json and sys.stderr.isatty()
    if args.dataset in ("nuclei", "lfw-faces") or getattr(args, "background", "plain") == "texture":
        require("tasks")
    if args.dataset in make.FMNIST_KINDS:
        counts = {k: getattr(args, k) for k in ("train", "val", "test") if getattr(args, k) is not None}
        out = make.make_fmnist(args.dataset, args.out, background=args.background, seed=args.seed, counts=counts,
                               data_dir=args.data_dir, progress=progress)  # fmt: skip
    elif args.dataset == "nuclei":
        out = make.make_nuclei(args.out)
    elif args.dataset == "lfw-faces":
        out = make.make_lfw_faces(args.out)
    else:
        out = make.make_fmnist_pairs(args.out, seed=args.seed, per_class=args.per_class, data_dir=args.data_dir)
    files = sum(1 for p in out.rglob("*") if p.is_file())
    if args.json:
        print(json.dumps({"dataset": args.dataset, "out": str(out), "files": files}))
    else:
        print(f"wrote {args.dataset} to {out} ({files} files)")
    return 0


def register(sub) -> None:
    data = sub.add_parser("data", help="inspect training data, or make a dataset").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("check", help="list every file that cannot be used, with the reason (exit 1 if any)")
    p.add_argument("path", help="an image folder (searched recursively) or one file")
    p.add_argument("--json", action="store_true", help='print {"bad": [{"path", "reason"}], "good": N}')
    p.set_defaults(func=cmd_data_check, extras=())

    p = data.add_parser("make", help="write a generated dataset (deterministic: the same seed, the same bytes)",
                        description=MAKE_HELP)  # fmt: skip
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--out", required=True, help="a new (or empty) folder")
    p.add_argument("--background", choices=("plain", "texture"), default="plain", help="fmnist-det/-seg canvases")
    p.add_argument("--seed", type=int, default=0, help="train/val canvases and pairs (the test canvases are fixed)")
    for split, n in (("train", 10_000), ("val", 1_000), ("test", 2_000)):
        p.add_argument(f"--{split}", type=positive_int, help=f"fmnist-det/-seg {split} canvases (default {n})")
    p.add_argument("--per-class", type=positive_int, help="fmnist-pairs: images per class (default: all)")
    p.add_argument("--data-dir", help="where the Fashion-MNIST IDX files are (default: Debian's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_make, extras=())
