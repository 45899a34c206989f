"""``effnet-runtime predict | eval | serve``: effnet's commands of the same names for exported
classifiers, without torch. Expected failures are one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from effnet_runtime.errors import RuntimeUsageError
from effnet_runtime.files import open_model

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_predict(args) -> int:
    model = open_model(args.weights, args.threads)
    results, failed = [], 0
    for image in args.images:
        try:
            results.append({"image": image, **model.predict([image], top_k=args.top_k)[0]})
        except RuntimeUsageError as exc:  # one bad image does not cost the others their answers
            print(f"effnet-runtime: error: {exc}", file=sys.stderr)
            failed += 1
    if args.json:
        print(json.dumps([{**r, "engine": model.engine} for r in results], indent=2))
    else:
        for r in results:
            print(r["image"])
            for t in r["top"]:
                print(f"  {t['prob']:7.2%}  {t['label']} ({t['index']})")
    return 2 if failed else 0


def class_folders(root: Path, names: list[str] | None) -> list[tuple[Path, int]]:
    """(image, class index) for every image in ``root/<class name>/``, the classes named as the
    model names them."""
    if not root.is_dir():
        raise RuntimeUsageError(f"--data {root}: not a directory")
    if names is None:
        raise RuntimeUsageError(f"--data {root}: the model has no class names to match the folders with")
    samples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in names:
            raise RuntimeUsageError(f"--data {root}: folder {folder.name!r} is not one of the model's classes")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        samples += [(p, names.index(folder.name)) for p in files]
    if not samples:
        raise RuntimeUsageError(f"--data {root}: no images in class folders (<class name>/<image>)")
    return samples


def evaluate(model, root: Path, batch_size: int = 32) -> dict:
    from effnet_runtime.preprocess import load, preprocess

    samples = class_folders(root, model.class_names)
    correct1 = correct5 = 0
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = np.stack([preprocess(load(path), model.preprocessing) for path, _ in chunk])
        logits = model.run(batch)
        ranked = np.argsort(-logits, axis=1, kind="stable")
        for row, (_, label) in zip(ranked, chunk, strict=True):
            correct1 += int(row[0] == label)
            correct5 += int(label in row[:5])
    n = len(samples)
    return {"model": model.name, "engine": model.engine, "n": n, "top1": correct1 / n, "top5": correct5 / n}


def cmd_eval(args) -> int:
    result = evaluate(open_model(args.weights, args.threads), Path(args.data), args.batch_size)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.weights} on {args.data} ({result['n']} images, {result['engine']}): "
              f"top1 {result['top1']:.4f}, top5 {result['top5']:.4f}")  # fmt: skip
    return 0


def cmd_serve(args) -> int:
    from effnet_runtime.serve import serve

    serve(open_model(args.weights, args.threads), args.host, args.port, max_body_mb=args.max_body_mb)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="effnet-runtime", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, func):
        c = sub.add_parser(name, help=help)
        c.add_argument("--weights", required=True, help="an effnet export: .tflite, .onnx or OpenVINO .xml")
        c.add_argument("--threads", type=positive_int, help="the runtime's threads (default: the cores, up to 4)")
        c.set_defaults(func=func)
        return c

    c = command("predict", "top-k classes of image files", cmd_predict)
    c.add_argument("images", nargs="+")
    c.add_argument("--top-k", type=positive_int, default=5)
    c.add_argument("--json", action="store_true")
    c = command("eval", "top-1/top-5 accuracy on a folder of class folders", cmd_eval)
    c.add_argument("--data", required=True, help="DIR/<class name>/<images>, the names the model's classes")
    c.add_argument("--batch-size", type=positive_int, default=32)
    c.add_argument("--json", action="store_true")
    c = command("serve", "an HTTP server: POST an image to /v1/predict", cmd_serve)
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=8000)
    c.add_argument("--max-body-mb", type=float, default=20.0, help="larger request bodies are refused (413)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except RuntimeUsageError as exc:
        print(f"effnet-runtime: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
