"""What a run leaves for people: metrics.csv, TensorBoard events, PNG plots and a line per epoch."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from effnet.core.figures import pyplot, save_figure
from effnet.core.fileio import atomic_write

COLUMNS = [
    "epoch", "step", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
    "skipped_steps", "epoch_seconds", "images_per_second",
]  # fmt: skip


def write_metrics_csv(run: Path, rows: list[dict]) -> None:
    """One row an epoch: the classification columns first, then whatever else a task reports."""
    extra = [k for k in rows[0] if k not in COLUMNS] if rows else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS + extra, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(run / "metrics.csv", lambda f: f.write(buffer.getvalue().encode()))


def plot_curves(run: Path, rows: list[dict]) -> None:
    plt = pyplot()

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
    plt = pyplot()
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


class EpochReporter:
    """Everything a run reports at the end of an epoch (main process only): metrics.csv, the
    curves, TensorBoard scalars and one line on stderr."""

    SCALARS = ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr")

    def __init__(self, run: Path, total_epochs: int, quiet: bool):
        from torch.utils.tensorboard import SummaryWriter

        self.run, self.total_epochs, self.quiet = run, total_epochs, quiet
        self.writer = SummaryWriter(str(run / "tensorboard"))

    def epoch(self, rows: list[dict]) -> None:
        row = rows[-1]
        write_metrics_csv(self.run, rows)
        plot_curves(self.run, rows)
        for key in self.SCALARS:
            if row.get(key) is not None:
                self.writer.add_scalar(key, row[key], row["step"])
        self.writer.flush()
        if not self.quiet:
            print(
                f"epoch {row['epoch']}/{self.total_epochs}: train loss {row['train_loss']:.4f} "
                f"top-1 {row['train_top1']:.2%}, val top-1 {row['val_top1']:.2%} top-5 {row['val_top5']:.2%}, "
                f"{row['images_per_second']} img/s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        self.writer.close()
