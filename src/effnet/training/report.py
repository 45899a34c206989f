"""What a run leaves for people: metrics.csv, TensorBoard events and PNG plots."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from effnet.fileio import atomic_write

COLUMNS = [
    "epoch", "step", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
    "skipped_steps", "epoch_seconds", "images_per_second",
]  # fmt: skip


def write_metrics_csv(run: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(run / "metrics.csv", lambda f: f.write(buffer.getvalue().encode()))


def plot_curves(run: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.plot(epochs, [100 * r["train_top1"] for r in rows], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["val_top1"] for r in rows], "o-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, run / "curves.png")


def plot_confusion(path: Path, confusion: list[list[int]], classes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    matrix = np.asarray(confusion, dtype=float)
    normalized = matrix / np.clip(matrix.sum(1, keepdims=True), 1, None)
    size = max(4, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(classes, rotation=90)
    ax.set_yticklabels(classes)
    if len(classes) <= 20:
        for (i, j), count in np.ndenumerate(matrix):
            color = "white" if normalized[i, j] > 0.5 else "black"
            ax.text(j, i, int(count), ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: str | Path, dpi: int = 100) -> None:
    """Render a matplotlib figure to PNG and write it atomically; closes the figure."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write(Path(path), lambda f: f.write(buffer.getvalue()))
