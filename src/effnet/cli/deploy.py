"""``effnet predict``, ``export``, ``bench`` and ``eval``: running trained models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from effnet.cli.common import (
    add_engine_options,
    add_weights_options,
    engine_kwargs,
    parse_list,
    positive_int,
    print_table,
    weights_kwargs,
)
from effnet.core.errors import UsageError
from effnet.datasets.choices import BAD_IMAGE_POLICIES, SPLITS
from effnet.deploy.choices import BENCH_ENGINES, DEFAULT_OPSET, FORMATS
from effnet.tasks.registry import task_names

FORM_COLUMNS = [
    ("form", "{}"),
    ("batch", "{}"),
    ("top1", "{:.4f}"),
    ("agreement", "{:.4f}"),
    ("agreement_confident", "{:.4f}"),
    ("MB", "{:.1f}"),
    ("ms", "{:.2f}"),
    ("img_s", "{:.1f}"),
    ("vs_fp32", "{:.2f}x"),
]
BENCH_COLUMNS = [
    ("model", "{}"),
    ("batch", "{}"),
    ("engine", "{}"),
    ("median_ms", "{:.1f}"),
    ("p10_ms", "{:.1f}"),
    ("p90_ms", "{:.1f}"),
    ("images_per_s", "{:.1f}"),
    ("vs_torchvision", "{:.2f}"),
    ("vs_limit", "{:.2f}"),
    ("vs_roofline", "{:.2f}"),
]
ROOFLINE_COLUMNS = [("type", "{}"), ("eager_ms", "{:.2f}"), ("limit_ms", "{:.2f}"), ("flops", "{:.3g}"),
                    ("bytes", "{:.3g}"), ("memory_bound", "{}")]  # fmt: skip


def cmd_predict(args) -> int:
    from effnet.deploy.engines import open_model
    from effnet.deploy.predict import predict
    from effnet.tasks.registry import entry_of

    model = open_model(args.weights, args.model, engine=args.engine, **engine_kwargs(args),
                       **weights_kwargs(args)).model  # fmt: skip
    results, errors = predict(model, args.images, top_k=args.top_k, out_dir=args.out,
                              score_threshold=args.score_threshold)  # fmt: skip
    if args.json:
        engine = getattr(model, "engine", "torch")
        print(json.dumps([{**r.to_dict(), "engine": engine} for r in results], indent=2))
    else:
        entry = entry_of(model)
        for r in results:
            print(r.image + (f" -> {r.output}" if r.output else ""))
            for line in entry.summary_line(r.result):
                print(line)
    for exc in errors:
        print(f"effnet: error: {exc}", file=sys.stderr)
    return 2 if errors else 0


def cmd_export(args) -> int:
    from effnet.core.fileio import refuse_overwrite
    from effnet.deploy.engines import open_model
    from effnet.deploy.export import export, format_for
    from effnet.models.registry import create_model

    out = Path(args.out)
    refuse_overwrite(out, [args.weights])
    if (args.format or format_for(out)) == "openvino":
        refuse_overwrite(out.with_suffix(".bin"), [args.weights])  # an IR's weights go beside the .xml
    extra = None
    if args.weights:
        trained = open_model(args.weights, args.model, engine="torch", **weights_kwargs(args))
        model = trained.model
        if trained.provenance.training:  # what it was trained on travels on, for eval and quantize
            extra = {"training": json.dumps(trained.provenance.training)}
    elif args.model:
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
        extra_metadata=extra,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        batch = "dynamic" if result.batch_size is None else result.batch_size
        print(f"wrote {result.path} ({result.format}, {result.image_size}x{result.image_size}, batch {batch})")
        print(
            f"max |exported - eager| = {result.max_abs_diff:.3g} "
            f"({result.relative_diff:.2g} of the output scale {result.output_scale:.3g}; allowed {result.tolerance:g})"
        )
    return 0


def cmd_bench(args) -> int:
    if args.weights:
        return _bench_forms(args)
    from effnet.core.extras import installed
    from effnet.deploy.bench import bench, plot

    # by default the mobile runtimes join the rotation where their extras are installed; named
    # in --engines, a missing one is an error
    engines = parse_list(args.engines, "--engines") if args.engines else [
        e for e in BENCH_ENGINES if e.split("_")[-1] not in ("litert", "executorch") or installed(e.split("_")[-1])
    ]  # fmt: skip
    rows = bench(
        parse_list(args.models, "--models"),
        parse_list(args.batch_sizes, "--batch-sizes", int),
        image_size=args.image_size,
        threads=args.threads,
        min_runs=args.runs,
        min_seconds=args.min_seconds,
        engines=engines,
        ov_hint=args.ov_hint,
        ov_precision=args.ov_precision,
        peak=args.peak_gflops,
        progress=not args.json and sys.stderr.isatty(),
    )
    if args.plot:
        plot(rows, args.plot)
    if args.roofline_plot:
        from effnet.deploy.bench import layer_breakdowns
        from effnet.deploy.roofline import plot_breakdown

        batch = parse_list(args.batch_sizes, "--batch-sizes", int)[0]
        breakdowns = layer_breakdowns(parse_list(args.models, "--models"), batch, image_size=args.image_size,
                                      threads=args.threads, peak=args.peak_gflops)  # fmt: skip
        plot_breakdown(breakdowns, args.roofline_plot)
        if not args.json:
            for title, types in breakdowns.items():
                print(f"{title}: ms by layer type (eager, BN folded; roofline limit)")
                print_table([{"type": t, **v} for t, v in types.items()], ROOFLINE_COLUMNS)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        how = "fp32 stated, the others measured" if args.peak_gflops else "measured, 2048x2048 matmul"
        peaks = ", ".join(sorted({f"{r.precision} {r.peak_gflops:.0f}" for r in rows}))
        print(f"threads: {rows[0].threads}, median of >= {args.runs} runs; OpenVINO: hint {args.ov_hint}, "
              f"precision {args.ov_precision}; vs_limit: latency / (2 x MACs / fp32 peak); peaks GFLOP/s ({how}): "
              f"{peaks}; vs_roofline: latency / sum over layers of max(FLOPs / the row's precision's peak, "
              "bytes / measured bandwidth)")  # fmt: skip
        print_table([r.to_dict() for r in rows], BENCH_COLUMNS)
    return 0


def _bench_forms(args) -> int:
    """``bench --weights``: the trained classifier in fp32, bf16 and int8 (effnet.compress.forms)."""
    from effnet.compress.forms import compare_forms

    if args.models != "efficientnet_b0" or args.engines or args.plot or args.roofline_plot or args.image_size:
        raise UsageError("--weights compares the forms of one trained model: no --models, --engines, --image-size, "
                         "--plot or --roofline-plot with it")  # fmt: skip
    sizes = parse_list(args.batch_sizes, "--batch-sizes", int)
    result = compare_forms(args.weights, args.data, split=args.split, limit=args.limit, batch_sizes=tuple(sizes),
                           threads=args.threads, ov_hint=args.ov_hint, min_runs=args.runs,
                           calibration_images=args.calibration_images,
                           min_seconds=args.min_seconds, progress=not args.json and sys.stderr.isatty())  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.weights} on {result['images']} {result['split']} images; threads {result['threads']}, OpenVINO "
          f"hint {result['ov_hint']}; int8 calibrated on {result['calibration_images']} training images; "
          f"agreement: top-1 equal to the fp32 eager model's (_confident: on the {result['confident_images']} images "
          "where its top-1 probability is >= 0.5); vs_fp32: latency / fp32 ONNX Runtime's")  # fmt: skip
    table = []
    for row in result["rows"]:
        for batch in sizes:
            table.append({**row, "batch": batch, "ms": row["median_ms"][batch], "img_s": row["images_per_s"][batch],
                          "vs_fp32": row["vs_fp32"][batch], "MB": row["file_bytes"] / 1e6})  # fmt: skip
    print_table(table, FORM_COLUMNS)
    return 0


def print_metrics(result: dict, weights: str) -> None:
    """Every float the task reports, then its per-class figures (a table per kind)."""
    n = f" ({result['n']} images)" if "n" in result else ""
    print(f"{weights} on {result.get('split', 'pairs')}{n}: {result['metric']} {result['score']:.4f}")
    print("  " + ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float) and k != "score"))
    if isinstance(result.get("per_class"), list):  # classification: accuracy per class
        for name, value in zip(result["classes"], result["per_class"], strict=True):
            print(f"  {value:7.2%}  {name}")
    for key in ("per_class_ap", "per_class_iou", "per_class_dice"):
        for name, value in result.get(key, {}).items():
            print(f"  {key[10:]:>4} {value:7.4f}  {name}")


def cmd_eval(args) -> int:
    from effnet.core.figures import check_writable
    from effnet.deploy.engines import open_model
    from effnet.deploy.evaluate import evaluate, verify_pairs
    from effnet.tasks.registry import task_of
    from effnet.training.report import plot_confusion

    trained = open_model(args.weights, engine=args.engine, **engine_kwargs(args))
    task = task_of(trained.model)
    if args.pairs and args.task is None:
        args.task = "verification"
    if args.task not in (None, task) and not (args.task == "verification" and task == "embedding"):
        raise UsageError(f"--task {args.task}: {args.weights} holds a {task} model")
    if args.plot:
        if task != "classification":
            raise UsageError(f"--plot draws a classifier's confusion matrix; {args.weights} holds a {task} model")
        check_writable(args.plot, "--plot")  # before the evaluation, not after it
    if args.task == "verification":
        if not args.pairs:
            raise UsageError("--task verification needs --pairs pairs.txt")
        result = verify_pairs(trained, args.pairs, args.people)
    else:
        result = evaluate(trained, args.data, split=args.split, data_dir=args.data_dir, val_split=args.val_split,
                          seed=args.seed, batch_size=args.batch_size, bad_images=args.bad_images,
                          annotations=args.annotations)  # fmt: skip
    result["engine"] = getattr(trained.model, "engine", "torch")
    if args.plot:
        plot_confusion(args.plot, result["confusion"], result["classes"])
    if args.json:
        if isinstance(result.get("per_class"), list):  # by name, not position
            result = {**result, "per_class": dict(zip(result["classes"], result["per_class"], strict=True))}
        print(json.dumps({k: v for k, v in result.items() if k != "confusion"}, indent=2))
    else:
        print_metrics(result, args.weights)
    return 0


def cmd_serve(args) -> int:
    import os

    from effnet.deploy.serve import ServeOptions, print_ready, serve

    options = ServeOptions(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, workers=args.workers,
                           max_body_mb=args.max_body_mb, queue=args.queue, max_pixels=args.max_pixels,
                           max_images=args.max_images, body_timeout=args.body_timeout,
                           decode_budget=args.decode_budget, decode_wait=args.decode_wait)  # fmt: skip
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0-65535 (0: any free port), got {args.port}")
    if args.api_key is not None and not args.api_key.strip():
        raise UsageError("--api-key is empty")
    api_key = args.api_key or os.environ.get("EFFNET_API_KEY", "").strip() or None
    return serve(args.weights, engine=args.engine, host=args.host, port=args.port, options=options,
                 log_level=args.log_level, ready=print_ready, api_key=api_key, ssl_certfile=args.ssl_certfile,
                 ssl_keyfile=args.ssl_keyfile, **engine_kwargs(args))  # fmt: skip


def register(sub) -> None:
    p = sub.add_parser("predict", help="classes, boxes, masks or embeddings of images, from any model file or tag")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument(
        "--weights", required=True, help="pretrained tag (lite0), a .safetensors/.pth file or an .onnx export"
    )
    add_weights_options(p)
    add_engine_options(p)
    p.add_argument("--top-k", type=positive_int, default=5)
    p.add_argument("--out", help="detection/segmentation: draw boxes or masks onto copies of the images here")
    p.add_argument("--score-threshold", type=float, default=0.5, help="detection: boxes below it are not shown")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict, extras=())

    p = sub.add_parser("serve", help="serve a classifier over HTTP: dynamic batching, metrics, a page to try it")
    p.add_argument("--weights", required=True, help="an .onnx export (dynamic batch), OpenVINO .xml or .safetensors")
    add_engine_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="0: any free port (the ready line on stdout names it)")
    p.add_argument("--max-batch", type=positive_int, default=16, help="images per engine call")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more after its first")
    p.add_argument("--workers", type=positive_int, default=1, help="engine calls running at once (threads)")
    p.add_argument("--max-body-mb", type=float, default=10.0, help="larger request bodies get 413")
    p.add_argument("--max-pixels", type=positive_int, default=16_000_000,
                   help="larger images get 413 from their header, before decoding (decompression bombs)")  # fmt: skip
    p.add_argument("--decode-budget", type=float, default=64.0,
                   help="megapixels decoded at once by all requests together (~15-25 bytes each); an "
                   "image that waits longer than --decode-wait for them gets 503, one larger than all 413")  # fmt: skip
    p.add_argument("--decode-wait", type=float, default=5.0, help="seconds an image may wait for decode budget")
    p.add_argument("--max-images", type=positive_int, default=64, help="images in one /v1/predict/batch request")
    p.add_argument("--queue", type=positive_int, default=256,
                   help="requests in flight at most (counted once their body is in); beyond: 503")  # fmt: skip
    p.add_argument("--body-timeout", type=float, default=10.0,
                   help="seconds for a request's whole body to arrive; beyond: 408, connection closed")  # fmt: skip
    p.add_argument("--api-key", help="ask every request but /healthz for 'Authorization: Bearer <key>' "
                   "(default: $EFFNET_API_KEY, which keeps the key out of the process list)")  # fmt: skip
    p.add_argument("--ssl-certfile", help="serve HTTPS with this PEM certificate (with --ssl-keyfile)")
    p.add_argument("--ssl-keyfile", help="the certificate's PEM private key")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=cmd_serve, extras=("serve",))

    p = sub.add_parser("export", help="export the inference form (BN folded) to ONNX, OpenVINO, TorchScript, LiteRT or "
                       "ExecuTorch, checked against eager")  # fmt: skip
    p.add_argument("--weights", help="pretrained tag (lite0) or a weights file")
    add_weights_options(p)
    p.add_argument("--format", choices=FORMATS, help="default: by --out's suffix (.onnx, .xml, .pt, .tflite, .pte)")
    p.add_argument("--out", required=True, help="file to write (.onnx / .xml + .bin / .pt / .tflite / .pte)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    p.add_argument("--image-size", type=positive_int, help="input side (default: the model's resolution)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="the fixed batch size of a static export")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export, extras=())  # each format asks for its extra itself (export.export)

    p = sub.add_parser("bench", help="inference latency: torchvision, timm, effnet eager, on ONNX Runtime and OpenVINO")
    p.add_argument("--models", default="efficientnet_b0", help="comma-separated model names")
    p.add_argument("--weights", help="a trained classifier (.safetensors): time and score it in fp32, bf16 and int8 "
                   "(ONNX Runtime and OpenVINO) instead of the engines' rows")  # fmt: skip
    p.add_argument("--data", help="with --weights: the data to score on (default: what it was trained on)")
    p.add_argument("--split", default="test", choices=["val", "test"], help="with --weights: the split to score on")
    p.add_argument("--limit", type=positive_int, default=1000, help="with --weights: score the first N images")
    p.add_argument("--calibration-images", type=positive_int, default=256,
                   help="with --weights: training images that calibrate the int8 forms")  # fmt: skip
    p.add_argument("--batch-sizes", default="1,32", help="comma-separated batch sizes")
    p.add_argument("--engines", help="comma-separated subset of: " + ", ".join(BENCH_ENGINES))
    p.add_argument("--image-size", type=positive_int, help="default: each model's resolution")
    p.add_argument("--threads", type=positive_int, help="threads for torch and the runtimes (default: torch's)")
    add_engine_options(p, engine=False, threads=False, cache=False)
    p.add_argument("--peak-gflops", type=float, help="the CPU's fp32 peak for vs_limit (default: measured)")
    p.add_argument("--runs", type=positive_int, default=10, help="timed runs per engine, at least")
    p.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds per engine, at least")
    p.add_argument("--plot", help="write latency ratios as a PNG")
    p.add_argument("--roofline-plot", help="write a PNG of where each model's time goes by layer type (eager and "
                   "roofline limit, at the first batch size)")  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench, extras=("deploy",))

    p = sub.add_parser("eval", help="metrics of a weights file: accuracy, COCO mAP, IoU/Dice or verification")
    p.add_argument("--weights", required=True, help="an effnet .safetensors file or .onnx export")
    p.add_argument("--data", help="dataset (default: the one the weights were trained on)")
    p.add_argument("--data-dir", help="where the dataset's files are (default: the training run's)")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--val-split", type=float, help="default: the training run's")
    p.add_argument("--seed", type=int, help="default: the training run's")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--bad-images", default="error", choices=BAD_IMAGE_POLICIES)
    p.add_argument("--plot", help="write the confusion matrix to this PNG")
    p.add_argument(
        "--task", choices=(*task_names(), "verification"), help="default: the file's; verification needs --pairs"
    )
    p.add_argument("--annotations", help="detection: the COCO file's name (default: the training run's)")
    p.add_argument("--pairs", help="verification: an LFW-format pairs.txt")
    p.add_argument("--people", help="verification: the people/ folder (default: beside --pairs)")
    add_engine_options(p)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_eval, extras=("train",))
