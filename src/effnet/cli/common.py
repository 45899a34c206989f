"""What every command shares: tables, options built from dataclasses, list parsing, and the
weights options. Nothing heavy is imported here: parsers are built before torch loads."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from effnet.core.errors import UsageError


def print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    cells = [[fmt.format(r[key]) if r[key] is not None else "-" for key, fmt in columns] for r in rows]
    headers = [key for key, _ in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(c, widths, strict=True))))


def add_dataclass_options(parser, cls, help_text: dict, skip: tuple[str, ...] = ()) -> None:
    """One --option per field; defaults are suppressed so that only what was typed is seen."""
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
        if kind == "bool":  # on by default: --no-NAME turns it off
            action = argparse.BooleanOptionalAction if default else "store_true"
            parser.add_argument(flag, action=action, default=argparse.SUPPRESS, help=text)
        else:
            parser.add_argument(flag, type=casts[kind], default=argparse.SUPPRESS, help=text)


def dataclass_values(args, cls) -> dict:
    """The options of ``cls``'s fields that were given on the command line."""
    return {k: v for k, v in vars(args).items() if k in cls.__dataclass_fields__}


def parse_list(text: str, flag: str, cast=str) -> list:
    """A comma-separated option (``--batch-sizes 1,32``); empty items are ignored."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    try:
        return [cast(v) for v in items]
    except ValueError:
        kind = {int: "integers", float: "numbers"}.get(cast, "values")
        raise UsageError(f"{flag} takes comma-separated {kind}, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse turns the ValueError into a usage message)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_weights_options(p) -> None:
    p.add_argument("--model", help="model name; needed for files without effnet metadata")
    p.add_argument("--source", choices=["effnet", "torchvision", "timm", "lukemelas"], help="key layout of --weights")
    p.add_argument("--padding", choices=["symmetric", "same"], help="padding the weights were trained with")
    p.add_argument("--bn-eps", type=float, help="BatchNorm eps the weights were trained with")


def weights_kwargs(args) -> dict:
    """What a weights file without effnet metadata was trained with (--source/--padding/--bn-eps)."""
    return {k: v for k, v in (("source", args.source), ("padding", args.padding), ("bn_eps", args.bn_eps)) if v}


def add_engine_options(p, *, engine: bool = True, threads: bool = True, cache: bool = True) -> None:
    """The engine a model runs on and the OpenVINO options that matter (shared by predict, eval,
    search, compress; bench has its own --engines list)."""
    from effnet.deploy.choices import ENGINES, OPENVINO_HINTS, OPENVINO_PRECISIONS

    if engine:
        p.add_argument("--engine", choices=ENGINES,
                       help="default: by the file (.onnx ONNX Runtime, .xml OpenVINO, .tflite LiteRT, .pte ExecuTorch, "
                       "else torch)")  # fmt: skip
    if threads:
        p.add_argument("--threads", type=positive_int, help="the runtime's threads (default: torch's)")
    p.add_argument("--ov-hint", choices=OPENVINO_HINTS, default="latency",
                   help="OpenVINO: latency (one request, all threads) or throughput (streams)")  # fmt: skip
    p.add_argument("--ov-precision", choices=OPENVINO_PRECISIONS, default="f32",
                   help="OpenVINO: f32 (parity with eager) or bf16 (faster on CPUs with bf16 units)")  # fmt: skip
    if cache:
        p.add_argument("--ov-cache-dir", help="OpenVINO: keep compiled models here, so a second start is fast")


def engine_kwargs(args) -> dict:
    """``open_model``'s engine options from ``add_engine_options``'s arguments."""
    return {"threads": getattr(args, "threads", None), "hint": args.ov_hint, "precision": args.ov_precision,
            "cache_dir": getattr(args, "ov_cache_dir", None)}  # fmt: skip
