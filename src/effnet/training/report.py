"""What a run leaves for people: metrics.csv, TensorBoard events, PNG plots and a line per epoch."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from effnet.core.figures import pyplot, save_figure
from effnet.core.fileio import atomic_write, write_failure_is_run_error


def write_metrics_csv(run: Path, rows: list[dict]) -> None:
    """One row an epoch, the columns in the order the trainer reports them (classification:
    epoch, step, lr, train_loss, train_top1, val_loss, val_top1, val_top5, ...)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(run / "metrics.csv", lambda f: f.write(buffer.getvalue().encode()))


def plot_curves(run: Path, rows: list[dict], score: str = "top1") -> None:
    """Loss (train, and validation where the task has one) and the task's score per epoch;
    classification's training top-1 beside the validation's."""
    plt = pyplot()

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    if all(r.get("val_loss") is not None for r in rows):
        ax_loss.plot(epochs, [r["val_loss"] for r in rows], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    if f"train_{score}" in rows[0]:
        ax_acc.plot(epochs, [100 * r[f"train_{score}"] for r in rows], "o-", label="train")
    ax_acc.plot(epochs, [100 * r[f"val_{score}"] for r in rows], "o-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel=f"{score} (%)", title=score)
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

    def __init__(self, run: Path, total_epochs: int, quiet: bool, val_keys: tuple[str, ...] = ("top1", "top5")):
        from torch.utils.tensorboard import SummaryWriter

        self.run, self.total_epochs, self.quiet, self.val_keys = run, total_epochs, quiet, val_keys
        self.writer = SummaryWriter(str(run / "tensorboard"))

    def epoch(self, rows: list[dict]) -> None:
        row = rows[-1]
        with write_failure_is_run_error(self.run / "metrics.csv"):
            write_metrics_csv(self.run, rows)
        with write_failure_is_run_error(self.run / "curves.png"):
            plot_curves(self.run, rows, self.val_keys[0])
        for key, value in row.items():
            if key == "lr" or (key.startswith(("train_", "val_")) and isinstance(value, int | float)):
                self.writer.add_scalar(key, value, row["step"])
        self.writer.flush()
        if not self.quiet:
            train = ", ".join(f"{k[6:]} {v:.4g}" for k, v in row.items() if k.startswith("train_") and v is not None)
            val = ", ".join(f"{k} {row[f'val_{k}']:.4g}" for k in ("loss", *self.val_keys)
                            if row.get(f"val_{k}") is not None)  # fmt: skip
            print(f"epoch {row['epoch']}/{self.total_epochs}: train {train}; val {val}; {row['images_per_second']} "
                  "img/s", file=sys.stderr, flush=True)  # fmt: skip

    def close(self) -> None:
        self.writer.close()
