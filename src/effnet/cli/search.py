"""``effnet search`` and ``effnet scaling-study``: argument parsing and printing only."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from effnet.cli.common import add_dataclass_options, dataclass_values, parse_list, print_table
from effnet.core.errors import UsageError
from effnet.deploy.choices import ENGINES
from effnet.models.scaling import ALPHA, BETA, GAMMA
from effnet.search.proxy import Proxy

PROXY_HELP = {
    "data": "fashion-mnist, digits, or an image folder: the proxy task every candidate trains on",
    "base": "the baseline that is scaled (a model name)",
    "base_width": "the baseline's width multiplier (default: the named model's); < 1 for a quick proxy",
    "base_depth": "the baseline's depth multiplier (default: the named model's)",
    "image_size": "the baseline's input side; gamma^phi scales it (default: the named model's)",
    "epochs": "training epochs per candidate",
    "limit_train": "train on this many images only",
}

TRIAL_COLUMNS = [
    ("alpha", "{:g}"),
    ("beta", "{:g}"),
    ("gamma", "{:g}"),
    ("flops_ratio", "{:.3f}"),
    ("val_top1", "{:.2%}"),
    ("params", "{:,}"),
    ("macs", "{:,}"),
    ("latency_ms", "{:.2f}"),
]


def _proxy(args):
    return Proxy(**dataclass_values(args, Proxy))


def _reporter(quiet: bool):
    """One line per finished point on stderr, with an estimate of the time left."""
    start = time.monotonic()
    state = {"first_done": None}

    def report(point: dict, done: int, total: int) -> None:
        if quiet:
            return
        if state["first_done"] is None:
            state["first_done"] = done - 1  # points finished before this worker started
        mine = done - state["first_done"]
        left = (time.monotonic() - start) / max(1, mine) * max(0, total - done)
        print(
            f"[{done}/{total}] alpha={point['alpha']:g} beta={point['beta']:g} gamma={point['gamma']:g}: "
            f"val top-1 {point['val_top1']:.2%}, {point['macs'] / 1e6:.1f} M MACs, {point['latency_ms']:.2f} ms, "
            f"{point['train_seconds']:.0f} s (about {left / 60:.0f} min left)",
            file=sys.stderr,
        )

    return report


def cmd_search(args) -> int:
    from effnet.search.search import search

    given = [args.alpha, args.beta, args.gamma]
    if any(v is not None for v in given) and not all(v is not None for v in given):
        raise UsageError("give all three of --alpha, --beta, --gamma (skip the grid search) or none of them")

    def show(m: dict) -> None:
        if not args.json:
            print(f"  phi={m['phi']:+.3f}: {m['latency_ms']:.2f} ms, {m['macs'] / 1e6:.1f} M MACs", file=sys.stderr)

    out, result = search(
        _proxy(args),
        coefficients=tuple(given) if given[0] is not None else None,
        phi=args.phi,
        target=args.target,
        tolerance=args.tolerance,
        grid_step=args.grid_step,
        seed=args.seed,
        storage=args.storage,
        study=args.study,
        heartbeat=args.heartbeat,
        wait=not args.no_wait,
        objective=args.objective,
        latency_budget_ms=args.latency_budget_ms,
        device=args.device,
        engine=args.engine,
        plot=args.plot,
        progress=_reporter(args.json),
        budget_progress=show,
    )
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    if result is not None:
        columns = TRIAL_COLUMNS + ([("mnas_reward", "{:.4f}")] if args.latency_budget_ms else [])
        print_table(result.trials, columns)
        best = result.best
        print(
            f"best by {args.objective}: alpha={best['alpha']:g} beta={best['beta']:g} gamma={best['gamma']:g} "
            f"(val top-1 {best['val_top1']:.2%}); {len(result.trials)} points done, {result.pending} pending"
        )
    if "latency_budget" in out:
        budget = out["latency_budget"]
        print(
            f"largest phi within {args.latency_budget_ms} ms on {args.device} ({args.engine}): "
            f"phi={budget['phi']:.3f} "
            f"({budget['latency_ms']:.2f} ms; width {budget['width']:.3f}, depth {budget['depth']:.3f}, "
            f"{budget['resolution']} px, {budget['macs']:,} MACs)"
        )
    return 0


def cmd_scaling_study(args) -> int:
    from effnet.search.scaling_study import run_study

    def report(row, done: int, total: int) -> None:
        if not args.json:
            acc = row.test_top1 if row.test_top1 is not None else row.val_top1
            print(
                f"[{done}/{total}] {row.method} phi={row.phi:g} seed={row.seed}: top-1 {acc:.2%}, "
                f"{row.macs / 1e6:.1f} M MACs, {row.train_seconds:.0f} s",
                file=sys.stderr,
            )

    seeds = parse_list(args.seeds, "--seeds", int)
    run_study(
        _proxy(args), args.alpha, args.beta, args.gamma, parse_list(args.phis, "--phis", float), seeds, args.out, report
    )
    out = Path(args.out)
    if args.json:
        print((out / "scaling_study.json").read_text(), end="")
    else:
        print((out / "scaling_study.md").read_text(), end="")
        print(f"table, JSON and plot in {args.out}/scaling_study.{{md,json,png}}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "search",
        help="the compound-scaling grid search (alpha*beta^2*gamma^2 ~= 2) on Optuna; resumable, many workers",
    )
    add_dataclass_options(p, Proxy, PROXY_HELP)
    p.add_argument("--phi", type=float, default=1.0, help="phi the grid points are scaled by (paper: 1)")
    p.add_argument("--target", type=float, default=2.0, help="FLOPs growth per phi: alpha*beta^2*gamma^2")
    p.add_argument("--tolerance", type=float, default=0.1, help="accepted distance from --target")
    p.add_argument("--grid-step", type=float, default=0.05, help="spacing of the alpha, beta, gamma values")
    p.add_argument("--seed", type=int, default=0, help="training seed of every point")
    p.add_argument("--storage", default="sqlite:///search.db", help="Optuna RDB URL (sqlite, postgresql, mysql)")
    p.add_argument("--study", default="effnet-search", help="study name in --storage")
    p.add_argument("--heartbeat", type=int, default=10, help="seconds; a point silent for 3x this is run again")
    p.add_argument("--no-wait", action="store_true", help="stop when the queue is empty, not when the grid is done")
    p.add_argument("--alpha", type=float, help="skip the grid: scale these coefficients to the latency budget")
    p.add_argument("--beta", type=float)
    p.add_argument("--gamma", type=float)
    p.add_argument("--latency-budget-ms", type=float, help="find the largest phi whose measured latency fits")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where latency is measured")
    p.add_argument("--engine", default="torch", choices=ENGINES,
                   help="what latency is measured on: torch, or the export on onnxruntime or openvino")  # fmt: skip
    p.add_argument("--objective", default="accuracy", choices=["accuracy", "mnas"], help="how grid points are ranked")
    p.add_argument("--plot", help="write a heatmap of validation top-1 over the grid (PNG)")
    p.add_argument("--json", action="store_true", help="print trials, best and the budget fit as JSON")
    p.set_defaults(func=cmd_search, extras=("train", "search"))

    p = sub.add_parser("scaling-study", help="compound vs width/depth/resolution-only scaling at matched MACs")
    add_dataclass_options(p, Proxy, PROXY_HELP)
    p.add_argument("--alpha", type=float, default=ALPHA)
    p.add_argument("--beta", type=float, default=BETA)
    p.add_argument("--gamma", type=float, default=GAMMA)
    p.add_argument("--phis", default="0,1,2,3", help="comma-separated phi values")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--out", required=True, help="directory for runs, table, JSON and plot")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scaling_study, extras=("train",))
