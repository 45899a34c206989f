"""``effnet models`` and ``effnet scale``: the family table and compound-scaled members."""

from __future__ import annotations

import json

from effnet.cli.common import print_table
from effnet.core.errors import UsageError
from effnet.models.scaling import ALPHA, BETA, GAMMA

SUMMARY_COLUMNS = [
    ("name", "{}"),
    ("width", "{:.3f}"),
    ("depth", "{:.3f}"),
    ("resolution", "{}"),
    ("dropout", "{:.2f}"),
    ("params", "{:,}"),
    ("macs", "{:,}"),
]


DETECTOR_COLUMNS = [
    ("name", "{}"),
    ("backbone", "{}"),
    ("image_size", "{}"),
    ("fpn_channels", "{}"),
    ("fpn_repeats", "{}"),
    ("head_repeats", "{}"),
    ("weighting", "{}"),
    ("anchor_scale", "{:g}"),
    ("levels", "{}"),
    ("params", "{:,}"),
    ("macs", "{:,}"),
]


def cmd_models(args) -> int:
    from effnet.models.flops import model_summary
    from effnet.models.registry import list_models, resolve_config

    if args.task == "detection":
        return _detectors(args)
    names = list_models(args.filter)
    if not names:
        raise UsageError(f"--filter {args.filter!r} matches no model; known: {', '.join(list_models())}")
    rows = [model_summary(resolve_config(name)) for name in names]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows, SUMMARY_COLUMNS)
    return 0


def _detectors(args) -> int:
    """The EfficientDet table: the released D0-D7x and Lite0-4 (any phi: ``efficientdet_config``)."""
    import fnmatch

    from effnet.models.efficientdet import efficientdet_summary
    from effnet.models.efficientdet_specs import PUBLISHED

    names = [n for n in PUBLISHED if args.filter is None or fnmatch.fnmatch(n, args.filter)]
    if not names:
        raise UsageError(f"--filter {args.filter!r} matches no detector; known: {', '.join(PUBLISHED)}")
    rows = [efficientdet_summary(name) for name in names]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows, DETECTOR_COLUMNS)
    return 0


def cmd_scale(args) -> int:
    from effnet.models.flops import model_summary
    from effnet.models.registry import resolve_config
    from effnet.models.scaling import flops_ratio

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


def register(sub) -> None:
    p = sub.add_parser("models", help="the family table: multipliers, params and MACs of every model")
    p.add_argument("--filter", help="glob on model names, e.g. '*lite*'")
    p.add_argument(
        "--task",
        choices=("classification", "detection"),
        default="classification",
        help="detection: the EfficientDet table (D0-D7x, Lite0-4: BiFPN width and depth, heads, input)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("scale", help="a compound-scaled model: width beta^phi, depth alpha^phi, resolution gamma^phi")
    p.add_argument("--phi", type=float, required=True, help="compound coefficient (fractional and negative allowed)")
    p.add_argument("--alpha", type=float, default=ALPHA, help=f"depth base (default {ALPHA})")
    p.add_argument("--beta", type=float, default=BETA, help=f"width base (default {BETA})")
    p.add_argument("--gamma", type=float, default=GAMMA, help=f"resolution base (default {GAMMA})")
    p.add_argument(
        "--base",
        default="efficientnet_b0",
        help="baseline: efficientnet_b0, efficientnet_lite0, efficientnetv2_b0 or efficientnetv2_s",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scale)
