"""The ``effnet`` command: a thin layer over the Python API.

Expected failures (bad names, files, numbers) print one line and exit 2; a traceback
means a bug in effnet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from effnet.errors import UsageError


def print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    cells = [[fmt.format(r[key]) if r[key] is not None else "-" for key, fmt in columns] for r in rows]
    headers = [key for key, _ in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(c, widths, strict=True))))


SUMMARY_COLUMNS = [
    ("name", "{}"),
    ("width", "{:.3f}"),
    ("depth", "{:.3f}"),
    ("resolution", "{}"),
    ("dropout", "{:.2f}"),
    ("params", "{:,}"),
    ("macs", "{:,}"),
]


def cmd_models(args) -> int:
    from effnet.flops import model_summary
    from effnet.registry import list_models, resolve_config

    names = list_models(args.filter)
    if not names:
        raise UsageError(f"--filter {args.filter!r} matches no model; known: {', '.join(list_models())}")
    rows = [model_summary(resolve_config(name)) for name in names]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows, SUMMARY_COLUMNS)
    return 0


def cmd_scale(args) -> int:
    from effnet.flops import model_summary
    from effnet.registry import resolve_config
    from effnet.scaling import flops_ratio

    config = resolve_config(args.base, phi=args.phi, alpha=args.alpha, beta=args.beta, gamma=args.gamma)
    row = model_summary(config)
    base = model_summary(resolve_config(args.base))
    row.update(
        phi=args.phi,
        alpha=args.alpha,
        beta=args.beta,
        gamma=args.gamma,
        flops_per_phi=flops_ratio(args.alpha, args.beta, args.gamma),
        macs_vs_base=row["macs"] / base["macs"],
    )
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        for key in ("name", "phi", "alpha", "beta", "gamma", "width", "depth", "resolution", "dropout"):
            print(f"{key:>14}: {row[key]}")
        print(f"{'params':>14}: {row['params']:,}")
        print(f"{'macs':>14}: {row['macs']:,} ({row['macs_vs_base']:.2f}x {args.base})")
        print(f"{'flops per phi':>14}: alpha*beta^2*gamma^2 = {row['flops_per_phi']:.3f}")
    return 0


def _weights_kwargs(args) -> dict:
    """What a weights file without effnet metadata was trained with (--source/--padding/--bn-eps)."""
    return {k: v for k, v in (("source", args.source), ("padding", args.padding), ("bn_eps", args.bn_eps)) if v}


def cmd_predict(args) -> int:
    from effnet.predict import load_for_inference, predict

    model = load_for_inference(args.weights, args.model, engine=args.engine, **_weights_kwargs(args))
    results, errors = predict(model, args.images, top_k=args.top_k)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            print(r.image)
            for t in r.top:
                print(f"  {t['prob']:7.2%}  {t['label']} ({t['index']})")
    for exc in errors:
        print(f"effnet: error: {exc}", file=sys.stderr)
    return 2 if errors else 0


def cmd_export(args) -> int:
    from effnet.export import export
    from effnet.predict import load_for_inference

    if args.weights:
        model = load_for_inference(args.weights, args.model, engine="torch", **_weights_kwargs(args))
    elif args.model:
        from effnet.registry import create_model

        model = create_model(args.model)  # the architecture alone, freshly initialised
    else:
        raise UsageError("give --weights FILE (and --model for files without effnet metadata) or --model NAME")
    result = export(
        model,
        args.out,
        format=args.format,
        image_size=args.image_size,
        batch_size=args.batch_size,
        dynamic_batch=args.dynamic_batch,
        opset=args.opset,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        batch = "dynamic" if result.batch_size is None else result.batch_size
        print(f"wrote {result.path} ({result.format}, {result.image_size}x{result.image_size}, batch {batch})")
        print(
            f"max |exported - eager| = {result.max_abs_diff:.3g} "
            f"({result.relative_diff:.2g} of the output scale {result.output_scale:.3g}; allowed 1e-4)"
        )
    return 0


BENCH_COLUMNS = [
    ("model", "{}"),
    ("batch", "{}"),
    ("engine", "{}"),
    ("median_ms", "{:.1f}"),
    ("p10_ms", "{:.1f}"),
    ("p90_ms", "{:.1f}"),
    ("images_per_s", "{:.1f}"),
    ("vs_torchvision", "{:.2f}"),
]


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} takes comma-separated integers, got {text!r}") from None


def cmd_bench(args) -> int:
    from effnet.bench import ENGINES, bench, plot

    engines = args.engines.split(",") if args.engines else list(ENGINES)
    rows = bench(
        [m.strip() for m in args.models.split(",") if m.strip()],
        _int_list(args.batch_sizes, "--batch-sizes"),
        image_size=args.image_size,
        threads=args.threads,
        min_runs=args.runs,
        min_seconds=args.min_seconds,
        engines=engines,
        progress=not args.json and sys.stderr.isatty(),
    )
    if args.plot:
        plot(rows, args.plot)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        print(f"threads: {rows[0].threads}, image size: {rows[0].image_size}, median of >= {args.runs} runs")
        print_table([r.to_dict() for r in rows], BENCH_COLUMNS)
    return 0


def cmd_data_check(args) -> int:
    from pathlib import Path

    from effnet.datasets import check_files

    root = Path(args.path)
    if not root.exists():
        raise UsageError(f"{root}: no such file or directory")
    files = [str(root)] if root.is_file() else sorted(str(p) for p in root.rglob("*") if p.is_file())
    report = check_files(files, progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for bad in report.bad:
            print(f"BAD  {bad['path']}: {bad['reason']}")
        print(f"{len(report.good)} good, {len(report.bad)} bad")
    return 1 if report.bad else 0


TRAIN_HELP = {
    "model": "model name (or use --phi)",
    "phi": "compound-scaled B0 with this phi instead of a named model",
    "width": "override the model's width multiplier",
    "depth": "override the model's depth multiplier",
    "weights": "initialise from an effnet weights file or a pretrained tag (lite0); a new classifier if classes differ",
    "data": "fashion-mnist, digits, or an image folder (train/ and val/ inside, or one class tree)",
    "image_size": "input side (default: the model's resolution)",
    "augment": "paper (random-resized crop, flip, RandAugment), light (padded crop, flip) or none",
    "opt": "rmsproptf (paper), adamw or sgd",
    "sched": "step (paper: x0.97 every 2.4 epochs) or cosine",
    "lr": "base learning rate (default: per optimizer, x global batch / 256)",
    "checkpoint_every": "also write the resume state every N optimizer steps",
    "amp": "none or bf16 (autocast)",
    "bad_images": "error: stop on the first bad file; skip: train on the good ones",
    "memory_efficient": "recompute activations in the backward pass (per block): less memory, ~1 extra forward",
    "teacher": "distil from this trained model (an effnet .safetensors file with the same classes)",
    "kd_temperature": "distillation temperature T",
    "kd_alpha": "weight of the distillation term; 1 - kd_alpha weighs the labels",
    "cache_teacher": "run the teacher once over the training images and reuse its logits (needs --augment none)",
}


def add_dataclass_options(parser, cls, help_text: dict, skip: tuple[str, ...] = ()) -> None:
    """One --option per field; defaults are suppressed so that only what was typed is seen."""
    from dataclasses import MISSING, fields

    casts = {"int": int, "float": float, "str": str}
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type).replace(" | None", "")
        default = None if f.default is MISSING else f.default
        text = help_text.get(f.name, "")
        if "default" not in text:
            text += f" (default: {default})"
        if kind == "bool":
            parser.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=text)
        else:
            parser.add_argument(flag, type=casts[kind], default=argparse.SUPPRESS, help=text)


def dataclass_values(args, cls) -> dict:
    """The options of ``cls``'s fields that were given on the command line."""
    return {k: v for k, v in vars(args).items() if k in cls.__dataclass_fields__}


def cmd_train(args) -> int:
    from pathlib import Path

    from effnet.training import TrainConfig, train

    given = dataclass_values(args, TrainConfig)
    if "phi" in given and "model" not in given:
        given["model"] = None
    if args.resume and (Path(args.out) / "config.json").is_file():
        # The saved settings fill in whatever this command does not repeat.
        saved = json.loads((Path(args.out) / "config.json").read_text())
        cfg = TrainConfig.from_dict({**saved, **given})
    else:
        cfg = TrainConfig(**given)
    row = train(cfg, args.out, resume=args.resume, quiet=args.quiet)
    if args.json and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(json.dumps(row, indent=2))
    return 0


def cmd_distill(args) -> int:
    """``effnet train`` with a teacher: the same runs, resume and reports."""
    from pathlib import Path

    if args.student is None and getattr(args, "phi", None) is None:
        raise UsageError("give --student NAME|FILE or --phi")
    if args.student is not None:
        if args.student.endswith(".safetensors") or Path(args.student).is_file():
            args.weights, args.model = args.student, None
        else:
            args.model = args.student
    args.teacher, args.kd_temperature, args.kd_alpha = args.teacher_file, args.temperature, args.alpha
    return cmd_train(args)


def cmd_eval(args) -> int:
    from effnet.training import evaluate_weights

    result, classes = evaluate_weights(
        args.weights,
        args.data,
        split=args.split,
        data_dir=args.data_dir,
        val_split=args.val_split,
        seed=args.seed,
        batch_size=args.batch_size,
        bad_images=args.bad_images,
    )
    per_class = dict(zip(classes, result["per_class"], strict=True))
    if args.plot:
        from effnet.training.report import plot_confusion

        plot_confusion(args.plot, result["confusion"], classes)
    if args.json:
        out = {k: result[k] for k in ("top1", "top5", "loss", "n")}
        print(json.dumps({**out, "per_class": per_class}, indent=2))
    else:
        print(f"{args.weights} on {args.split} ({result['n']} images)")
        print(f"  top-1 {result['top1']:.2%}  top-5 {result['top5']:.2%}  loss {result['loss']:.4f}")
        for name, acc in per_class.items():
            print(f"  {acc:7.2%}  {name}")
    return 0


def _add_weights_options(p) -> None:
    p.add_argument("--model", help="model name; needed for files without effnet metadata")
    p.add_argument("--source", choices=["effnet", "torchvision", "timm", "lukemelas"], help="key layout of --weights")
    p.add_argument("--padding", choices=["symmetric", "same"], help="padding the weights were trained with")
    p.add_argument("--bn-eps", type=float, help="BatchNorm eps the weights were trained with")


def build_parser() -> argparse.ArgumentParser:
    from effnet import __version__
    from effnet.bench import ENGINES as BENCH_ENGINES
    from effnet.export import DEFAULT_OPSET, FORMATS
    from effnet.predict import ENGINES
    from effnet.scaling import ALPHA, BETA, GAMMA

    parser = argparse.ArgumentParser(prog="effnet", description="EfficientNet: build, scale, convert, predict.")
    parser.add_argument("--version", action="version", version=f"effnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="the family table: multipliers, params and MACs of every model")
    p.add_argument("--filter", help="glob on model names, e.g. '*lite*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("scale", help="a compound-scaled model: width beta^phi, depth alpha^phi, resolution gamma^phi")
    p.add_argument("--phi", type=float, required=True, help="compound coefficient (fractional and negative allowed)")
    p.add_argument("--alpha", type=float, default=ALPHA, help=f"depth base (default {ALPHA})")
    p.add_argument("--beta", type=float, default=BETA, help=f"width base (default {BETA})")
    p.add_argument("--gamma", type=float, default=GAMMA, help=f"resolution base (default {GAMMA})")
    p.add_argument("--base", default="efficientnet_b0", help="baseline: efficientnet_b0 or efficientnet_lite0")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scale)

    p = sub.add_parser("predict", help="classify images with a weights file or pretrained tag")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument(
        "--weights", required=True, help="pretrained tag (lite0), a .safetensors/.pth file or an .onnx export"
    )
    _add_weights_options(p)
    p.add_argument("--engine", choices=ENGINES, help="torch or onnxruntime (default: onnxruntime for .onnx files)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export the inference form (BN folded) to ONNX or TorchScript, checked")
    p.add_argument("--weights", help="pretrained tag (lite0) or a weights file")
    _add_weights_options(p)
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--out", required=True, help="file to write (.onnx / .pt)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    p.add_argument("--image-size", type=int, help="input side (default: the model's resolution)")
    p.add_argument("--batch-size", type=int, default=1, help="the fixed batch size of a static export")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="inference latency: torchvision, timm, effnet eager and on ONNX Runtime")
    p.add_argument("--models", default="efficientnet_b0", help="comma-separated model names")
    p.add_argument("--batch-sizes", default="1,32", help="comma-separated batch sizes")
    p.add_argument("--engines", help="comma-separated subset of: " + ", ".join(BENCH_ENGINES))
    p.add_argument("--image-size", type=int, help="default: each model's resolution")
    p.add_argument("--threads", type=int, help="threads for torch and ONNX Runtime (default: torch's)")
    p.add_argument("--runs", type=int, default=10, help="timed runs per engine, at least")
    p.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds per engine, at least")
    p.add_argument("--plot", help="write latency ratios as a PNG")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    from effnet.training.recipe import TrainConfig

    p = sub.add_parser("train", help="train a model; writes config, metrics, weights, plots and resume state")
    add_dataclass_options(p, TrainConfig, TRAIN_HELP)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last state")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--json", action="store_true", help="print the last epoch's metrics as JSON")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="train a student on labels and a teacher's soft outputs (Hinton KD)")
    p.add_argument("--teacher", dest="teacher_file", required=True, help="the trained teacher (.safetensors)")
    p.add_argument("--student", help="a model name (trained from scratch) or a .safetensors file (fine-tuned)")
    p.add_argument("--temperature", type=float, default=4.0, help="softening temperature T (default 4)")
    p.add_argument("--alpha", type=float, default=0.9, help="weight of the distillation term (default 0.9)")
    add_dataclass_options(
        p, TrainConfig, TRAIN_HELP, skip=("model", "weights", "teacher", "kd_temperature", "kd_alpha")
    )
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last state")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--json", action="store_true", help="print the last epoch's metrics as JSON")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("eval", help="top-1, top-5, per-class accuracy and loss of a weights file")
    p.add_argument("--weights", required=True, help="an effnet .safetensors file")
    p.add_argument("--data", help="dataset (default: the one the weights were trained on)")
    p.add_argument("--data-dir")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--val-split", type=float, help="default: the training run's")
    p.add_argument("--seed", type=int, help="default: the training run's")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--bad-images", default="error", choices=["error", "skip"])
    p.add_argument("--plot", help="write the confusion matrix to this PNG")
    p.add_argument("--json", action="store_true", help="print {top1, top5, per_class, n, loss}")
    p.set_defaults(func=cmd_eval)

    from effnet.search.cli import add_parsers as add_search_parsers

    add_search_parsers(sub)
    from effnet.compress.cli import add_parsers as add_compress_parsers

    add_compress_parsers(sub)

    data = sub.add_parser("data", help="inspect training data").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("check", help="list every file that cannot be used, with the reason (exit 1 if any)")
    p.add_argument("path", help="an image folder (searched recursively) or one file")
    p.add_argument("--json", action="store_true", help='print {"bad": [{"path", "reason"}], "good": N}')
    p.set_defaults(func=cmd_data_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"effnet: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except RuntimeError as exc:
        from effnet.export import ExportError
        from effnet.training import TrainingError

        if not isinstance(exc, TrainingError | ExportError):
            raise
        print(f"effnet: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
