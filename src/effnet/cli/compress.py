"""``effnet prune``, ``quantize`` and ``compress``: argument parsing and printing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from effnet.cli.common import parse_list
from effnet.compress.choices import CALIBRATION_METHODS, SCHEMES
from effnet.core.errors import UsageError


def cmd_prune(args) -> int:
    from effnet.compress.prune import prune

    report = prune(
        args.weights,
        args.ratio,
        args.out,
        data=args.data,
        finetune_epochs=args.finetune_epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        limit_train=args.limit_train,
        seed=args.seed,
        quiet=args.json or not sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"pruned {args.ratio:.0%} of the expansion channels of a {report['task']} model: params "
        f"{report['params_before']:,} -> {report['params_after']:,}, MACs {report['macs_ratio']:.2f}x"
        + (" (the trunk's)" if report["task"] != "classification" else "")
    )
    if "val_score_finetuned" in report:
        steps = [f"{report['val_score_pruned']:.4f} right after pruning"]
        if "val_score_recalibrated" in report:
            steps.append(f"{report['val_score_recalibrated']:.4f} with BN statistics re-estimated")
        steps.append(f"{report['val_score_finetuned']:.4f} after {args.finetune_epochs} epoch(s) of fine-tuning")
        print(f"validation {report['metric']}: " + ", ".join(steps))
    print(f"wrote {args.out}")
    return 0


def _add_prune_parser(sub) -> None:
    p = sub.add_parser("prune", help="structured pruning of MBConv expansion channels (Torch-Pruning), fine-tuned")
    p.add_argument("--weights", required=True, help="an effnet .safetensors file")
    p.add_argument("--ratio", type=float, required=True, help="fraction of expansion channels to remove, in (0, 1)")
    p.add_argument("--data", help="fine-tuning data (default: what the weights were trained on)")
    p.add_argument("--finetune-epochs", type=int, default=1, help="0: no fine-tuning")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate of the fine-tuning")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit-train", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the pruned .safetensors file (loads without Torch-Pruning)")
    p.add_argument("--json", action="store_true", help="print params, MACs and accuracy before and after")
    p.set_defaults(func=cmd_prune, extras=("train", "compress"))


def cmd_quantize(args) -> int:
    from effnet.compress.quantize import quantize

    keep = tuple(parse_list(args.keep_fp32 or "", "--keep-fp32"))
    suffix = {"onnx": ".onnx", "openvino": ".xml", "litert": ".tflite", "executorch": ".pte"}
    if args.format and not args.out.lower().endswith(suffix[args.format]):
        raise UsageError(f"--out {args.out}: --format {args.format} writes a {suffix[args.format]} file")
    report = quantize(
        args.weights,
        args.out,
        data=args.data,
        calibration_images=args.calibration_images,
        method=args.calibration_method,
        keep_fp32=keep,
        seed=args.seed,
        evaluate_split=None if args.no_eval else args.split,
        scheme=args.method,
        qat_epochs=args.qat_epochs,
        qat_lr=args.qat_lr,
        limit_train=args.limit_train,
        quiet=args.json or not sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"int8 {report['format']} file {report['int8_bytes']:,} bytes = {report['size_ratio']:.2f}x the fp32 "
            f"export ({report['scheme']}, {report['calibration_images']} calibration images, {report['method']})"
        )
        if "int8_score" in report:
            print(
                f"{args.split} {report['metric']}: fp32 {report['fp32_score']:.4f}, int8 {report['int8_score']:.4f} "
                f"({report['score_drop']:+.4f} lost)"
            )
        print(f"wrote {args.out}")
    return 0


def _add_quantize_parser(sub) -> None:
    p = sub.add_parser("quantize", help="int8 ONNX, OpenVINO, LiteRT or ExecuTorch (per-channel weights), calibrated")
    p.add_argument("--weights", required=True, help="an effnet .safetensors file")
    p.add_argument("--data", help="calibration and evaluation data (default: what the weights were trained on)")
    p.add_argument("--method", default="ptq", choices=SCHEMES,
                   help="ptq: post-training; qat: fine-tune with int8 rounding in the loop first; dynamic: "
                   "LiteRT's dynamic-range int8, no calibration")  # fmt: skip
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--qat-lr", type=float, default=1e-4, help="AdamW learning rate of the QAT fine-tuning")
    p.add_argument("--limit-train", type=int, help="QAT fine-tunes on this many training images only")
    p.add_argument("--calibration-images", type=int, default=256)
    p.add_argument("--calibration-method", default="minmax", choices=CALIBRATION_METHODS)
    p.add_argument("--keep-fp32", help="comma-separated ONNX op types to leave in float, e.g. Sigmoid,Mul")
    p.add_argument("--split", default="test", choices=["val", "test"], help="where fp32 and int8 are compared")
    p.add_argument("--no-eval", action="store_true", help="skip the fp32/int8 comparison")
    p.add_argument("--seed", type=int, default=0, help="which training images calibrate")
    p.add_argument("--format", choices=("onnx", "openvino", "litert", "executorch"), help="default: by --out's suffix")
    p.add_argument("--out", required=True, help="the int8 file: .onnx (ONNX Runtime QDQ), .xml (OpenVINO IR, by "
                   "NNCF), .tflite (LiteRT) or .pte (ExecuTorch, XNNPACK), the last two by PT2E")  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_quantize, extras=("train", "deploy"))


def cmd_compress(args) -> int:
    from effnet.compress.pipeline import compress, parse_steps

    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr)

    rows = compress(
        args.weights,
        args.out,
        steps=parse_steps(args.steps),
        data=args.data,
        student=args.student,
        epochs=args.epochs,
        prune_ratio=args.prune_ratio,
        finetune_epochs=args.finetune_epochs,
        calibration_images=args.calibration_images,
        limit_train=args.limit_train,
        seed=args.seed,
        timing_seconds=args.timing_seconds,
        progress=say,
    )
    if args.json:
        print((Path(args.out) / "report.json").read_text(), end="")
    else:
        print((Path(args.out) / "report.md").read_text(), end="")
        print(f"{len(rows)} stages; files, report.md/.json and accuracy_latency.png in {args.out}")
    return 0


def _add_compress_parser(sub) -> None:
    p = sub.add_parser("compress", help="distill, prune and quantize in one pipeline, every stage measured alike")
    p.add_argument("--weights", required=True, help="the trained model (.safetensors)")
    p.add_argument("--data", help="default: what the weights were trained on")
    p.add_argument("--steps", default="distill,prune,quantize", help="comma-separated, in order")
    p.add_argument("--student", help="distillation student: a model name or phi:X (default: the teacher's phi - 1)")
    p.add_argument("--epochs", type=int, default=3, help="distillation epochs")
    p.add_argument("--prune-ratio", type=float, default=0.5, help="fraction of expansion channels removed")
    p.add_argument("--finetune-epochs", type=int, default=1, help="fine-tuning after pruning")
    p.add_argument("--calibration-images", type=int, default=256)
    p.add_argument("--limit-train", type=int, help="train (distill, fine-tune) on this many images only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timing-seconds", type=float, default=2.0, help="latency: timed seconds per stage, at least")
    p.add_argument("--out", required=True, help="a new directory for the stages' files and the report")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compress, extras=("train", "deploy", "compress"))


def register(sub) -> None:
    _add_prune_parser(sub)
    _add_quantize_parser(sub)
    _add_compress_parser(sub)
