"""The paper's Figures 3 and 8 on the user's data: compound scaling against scaling one
dimension at a time, compared at matched MACs.

For each phi the compound-scaled model (depth alpha^phi, width beta^phi, side gamma^phi) sets
the MAC budget; the width-only, depth-only and resolution-only models get the multiplier of
their one dimension that spends the same MACs (found by bisection on the exact count; channel
and repeat rounding make the match approximate, and the table shows each model's real MACs).
Every model is trained with the same ``Proxy`` recipe, for every seed.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from effnet.core.errors import UsageError
from effnet.core.figures import pyplot, save_figure
from effnet.core.fileio import atomic_write
from effnet.search.proxy import Proxy, Shape

METHODS = ("compound", "width", "depth", "resolution")


@dataclass
class StudyRow:
    method: str
    phi: float
    seed: int
    multiplier: float  # the scaled dimension's multiplier (compound: the FLOPs ratio per phi)
    width: float
    depth: float
    resolution: int
    params: int
    macs: int
    val_top1: float
    test_top1: float | None
    train_seconds: float


def _match(proxy: Proxy, dimension: str, target_macs: int, iterations: int = 12) -> tuple[float, Shape, int]:
    """The multiplier of one dimension whose model's MACs come closest to ``target_macs``."""
    cache: dict[float, tuple[Shape, int]] = {}

    def macs_at(m: float) -> int:
        if m not in cache:
            shape = proxy.scaled(**{dimension: m})
            cache[m] = (shape, proxy.cost(shape)["macs"])
        return cache[m][1]

    # MACs grow monotonically (in steps) with each multiplier; bisect on its logarithm.
    low, high = 1.0, 1.0
    while macs_at(low) > target_macs and low > 0.05:
        low /= 2
    while macs_at(high) < target_macs and high < 16:
        high *= 2
    for _ in range(iterations):
        middle = math.sqrt(low * high)
        if macs_at(middle) < target_macs:
            low = middle
        else:
            high = middle
    best = min(cache, key=lambda m: (abs(cache[m][1] - target_macs), m))
    shape, macs = cache[best]
    return round(best, 4), shape, macs


def plan(
    proxy: Proxy, alpha: float, beta: float, gamma: float, phis: list[float]
) -> list[tuple[str, float, float, Shape]]:
    """(method, phi, multiplier, shape) for every model the study trains; phi=0 is the shared baseline."""
    if not phis:
        raise UsageError("--phis needs at least one value")
    out = []
    for phi in sorted(set(phis)):
        compound = proxy.compound(alpha, beta, gamma, phi)
        if phi == 0:
            out.append(("baseline", 0.0, 1.0, compound))
            continue
        out.append(("compound", phi, round(alpha * beta**2 * gamma**2, 4), compound))
        target = proxy.cost(compound)["macs"]
        for dimension in ("width", "depth", "resolution"):
            multiplier, shape, _ = _match(proxy, dimension, target)
            out.append((dimension, phi, multiplier, shape))
    return out


def run_study(
    proxy: Proxy,
    alpha: float,
    beta: float,
    gamma: float,
    phis: list[float],
    seeds: list[int],
    out: str | Path,
    progress=None,
) -> list[StudyRow]:
    """Train every planned model for every seed into ``out/runs`` (an interrupted study
    continues where it stopped), writing the table and plot after each model."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    if not seeds:
        raise UsageError("--seeds needs at least one value")
    models = plan(proxy, alpha, beta, gamma, phis)
    rows: list[StudyRow] = []
    for seed in seeds:
        for method, phi, multiplier, shape in models:
            run = out / "runs" / f"{method}_phi{phi:g}_seed{seed}"
            result = proxy.train(shape, run, seed=seed, test=True)
            rows.append(
                StudyRow(
                    method=method,
                    phi=phi,
                    seed=seed,
                    multiplier=multiplier,
                    **asdict(shape),
                    **proxy.cost(shape),
                    val_top1=result["val_top1"],
                    test_top1=result.get("test_top1"),
                    train_seconds=result["train_seconds"],
                )
            )
            write_outputs(rows, out, {"proxy": proxy.to_dict(), "alpha": alpha, "beta": beta, "gamma": gamma})
            if progress:
                progress(rows[-1], len(rows), len(models) * len(seeds))
    return rows


def _accuracy(row: StudyRow) -> float:
    return row.test_top1 if row.test_top1 is not None else row.val_top1


def curves(rows: list[StudyRow]) -> dict[str, list[dict]]:
    """Per method, one point per phi: mean MACs and mean/min/max accuracy over seeds; the
    baseline (phi=0) starts every curve."""
    out: dict[str, list[dict]] = {}
    for method in METHODS:
        points = []
        for phi in sorted({r.phi for r in rows}):
            group = [r for r in rows if r.phi == phi and (r.method == method or r.method == "baseline")]
            if not group:
                continue
            accs = [_accuracy(r) for r in group]
            points.append(
                {
                    "phi": phi,
                    "macs": statistics.mean(r.macs for r in group),
                    "top1_mean": statistics.mean(accs),
                    "top1_min": min(accs),
                    "top1_max": max(accs),
                    "seeds": len(group),
                }
            )
        out[method] = points
    return out


def write_outputs(rows: list[StudyRow], out: Path, settings: dict) -> None:
    table = curves(rows)
    text = json.dumps({**settings, "rows": [asdict(r) for r in rows], "curves": table}, indent=2) + "\n"
    atomic_write(out / "scaling_study.json", lambda f: f.write(text.encode()))
    lines = [
        "| method | phi | MACs (M) | top-1 mean (%) | min–max (%) | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for method, points in table.items():
        for p in points:
            lines.append(
                f"| {method} | {p['phi']:g} | {p['macs'] / 1e6:.1f} | {100 * p['top1_mean']:.2f} | "
                f"{100 * p['top1_min']:.2f}–{100 * p['top1_max']:.2f} | {p['seeds']} |"
            )
    markdown = "\n".join(lines) + "\n"
    atomic_write(out / "scaling_study.md", lambda f: f.write(markdown.encode()))
    plot(table, out / "scaling_study.png", "test" if rows and rows[0].test_top1 is not None else "validation")


def plot(table: dict[str, list[dict]], path: Path, split: str) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for method, points in table.items():
        if not points:
            continue
        xs = [p["macs"] / 1e6 for p in points]
        ys = [100 * p["top1_mean"] for p in points]
        low = [100 * (p["top1_mean"] - p["top1_min"]) for p in points]
        high = [100 * (p["top1_max"] - p["top1_mean"]) for p in points]
        ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=f"{method} scaling")
    ax.set_xscale("log")
    ax.set(xlabel="MACs (millions, log scale)", ylabel=f"{split} top-1 (%)", title="Scaling the baseline")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
