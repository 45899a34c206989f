"""Validation top-1 (at the final 64 px) against training time for the 60-minute side-by-side
runs: writes benchmarks/progressive/side_by_side60.png from the two summaries.

    python benchmarks/progressive/plot.py
"""

from __future__ import annotations

import json
from itertools import accumulate
from pathlib import Path

from effnet.core.figures import pyplot, save_figure

HERE = Path(__file__).resolve().parent
RUNS = {"fixed, 64 px": "fixed60_accuracy.json", "progressive, 32 → 64 px": "progressive60_accuracy.json"}


def main() -> None:
    fig, ax = pyplot().subplots(figsize=(7, 4.2))
    for label, name in RUNS.items():
        summary = json.loads((HERE / name).read_text())
        minutes = [s / 60 for s in accumulate(summary["epoch_seconds"])]
        val = [100 * v for v in summary["val_top1_by_epoch"]]
        line = ax.plot(minutes, val, marker="o", ms=3, label=f"{label}: test {100 * summary['test_top1']:.2f}%")[0]
        for size, x, y in zip(summary.get("image_size_by_epoch", []), minutes, val, strict=False):
            ax.annotate(str(size), (x, y), textcoords="offset points", xytext=(0, -11), fontsize=6,
                        ha="center", color=line.get_color())  # fmt: skip
    ax.axvline(60, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("training time, minutes (this 2-core CPU)")
    ax.set_ylabel("validation top-1 at 64 px, %")
    ax.set_ylim(60, 96)
    ax.set_title("Fashion-MNIST, B0 φ=−3: progressive vs fixed size, same budget")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, HERE / "side_by_side60.png", dpi=120)
    print(f"wrote {(HERE / 'side_by_side60.png').relative_to(HERE.parents[1])}")


if __name__ == "__main__":
    main()
