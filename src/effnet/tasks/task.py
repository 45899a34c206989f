"""The interface a task implements so that the trainer core can run it.

A task turns a batch into a loss and accumulates metrics; everything else (resume, DDP, EMA,
fault handling, run directories, reporting) is the trainer's. Classification is one task;
segmentation, detection and embeddings are others.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Metrics(Protocol):
    """Accumulates a task's measurements over batches; ``summary()`` returns plain numbers.
    ``summary()["score"]`` is what a run keeps its best model by (higher is better)."""

    def update(self, outputs: Any, targets: Any, loss_sum: float) -> None: ...

    def summary(self) -> dict: ...


class Task(Protocol):
    name: str
    val_keys: tuple[str, ...]  # the metrics' summary keys that each epoch reports as val_<key>
    val_batch: int  # validation batch size (at least the training batch)

    def split_batch(self, batch) -> tuple[torch.Tensor, Any, dict]:
        """(inputs, targets, extras) from what the DataLoader yields; extras go to the loss."""
        ...

    def to_device(self, targets: Any, device: torch.device) -> Any: ...

    def forward(self, net, inputs: Any, targets: Any) -> Any:
        """The training forward pass (detectors and ArcFace need the targets in it)."""
        ...

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The mean loss of a batch, in float32."""
        ...

    def train_counts(self, outputs: Any, targets: Any) -> dict[str, float]:
        """Sums over a training batch that the epoch's report adds up (e.g. correct predictions)."""
        ...

    def train_summary(self, totals: dict) -> dict:
        """The epoch's training figures (e.g. train_top1) from the summed ``train_counts``."""
        ...

    def metrics(self) -> Metrics: ...

    # Optional: ``collate``, the DataLoader's collate_fn (detection: variable-size targets).
