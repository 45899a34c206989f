"""What every command needs to know about a task, beyond the trainer's ``Task`` (loss and metrics):
the input a model of the task takes, the data it is evaluated on, and how one image's output
becomes a JSON-able prediction and a picture, and how a run of it is set up. A task module defines
one ``TaskEntry`` subclass and registers it (``effnet.tasks.registry``); train, eval, predict,
export, quantize, prune and serve use nothing else of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from effnet.core.errors import UsageError

# colours of boxes and masks, one per class in turn
PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
           "#fabebe", "#008080", "#e6beff", "#9a6324", "#800000", "#aaffc3", "#808000"]  # fmt: skip


@dataclass
class EvalData:
    """A split of a task's data as its model takes it, and the metrics that score the outputs."""

    dataset: Any
    collate: Any  # the DataLoader's collate_fn, or None for the default
    metrics: Any  # an object with update(outputs, targets) and summary()
    classes: list[str] | None


class TaskEntry:
    """The default behaviour is a model that maps an NCHW batch to one output per image."""

    name: str = ""
    # True when the model takes a list of images of any size and runs them one by one (a
    # detector's graph holds its own resize): no stacked batches, one image per exported run
    per_image: bool = False
    # the largest evaluation batch (dense outputs and detectors' padded batches cost memory)
    max_eval_batch: int | None = 32

    def training_task(self, model, **options):
        """The ``Task`` (batch format, loss, metrics; ``effnet.tasks.task``) that trains ``model``."""
        raise NotImplementedError(f"{self.name} has no training task")

    def training_data(self, cfg):
        """The run's data (``cfg``: a ``TrainConfig``): an object whose ``split("train"|"val")``
        the other training hooks read and whose ``classes`` name the model's outputs."""
        raise NotImplementedError(f"effnet train has no set-up for {self.name} (its entry's training_data)")

    def training_setup(self, cfg, data, trunk, continuing=None):
        """(model, ``Task``, train dataset, val dataset) of a run: the model on an EfficientNet
        ``trunk`` config (from --model/--phi or --weights), or ``continuing``'s architecture: a
        model of this task trained on the same classes (``--weights``), continued as it is."""
        raise NotImplementedError(f"effnet train has no set-up for {self.name} (its entry's training_setup)")

    def input_size(self, config) -> tuple[int, int]:
        """(channels, side) of the images a model with ``config`` takes by default."""
        return config.in_chans, config.resolution

    def eval_data(self, model, options: dict, split: str, training: dict, *, origin: str = "the model",
                  **kwargs) -> EvalData:  # fmt: skip
        """``split`` of the data that ``options`` (``Provenance.data_options``) names, as ``model``
        takes it; ``training`` is the run's configuration (annotation file, image size);
        ``origin`` names the model in messages."""
        raise NotImplementedError

    def preparer(self, model):
        """A function from one decoded image (PIL, and its uint8 CHW tensor) to the model's input
        for it; made once per model, called per image (predict, serve)."""
        transform = model.preprocessing.transform()
        return lambda image, pixels: transform(image)

    def run(self, model, inputs: list):
        """Outputs of ``model`` for prepared inputs, one per input."""
        if self.per_image:
            return list(model(inputs))
        # channels_last: the layout of the inference form (effnet.deploy.engines.inference_form)
        if len({tuple(x.shape) for x in inputs}) == 1:
            return list(model(torch.stack(inputs).contiguous(memory_format=torch.channels_last)))
        return [model(x[None].contiguous(memory_format=torch.channels_last))[0] for x in inputs]

    def format(self, model, output, *, top_k: int = 5, score_threshold: float = 0.5) -> dict:
        """One image's output as plain data (what predict --json and serve answer)."""
        raise NotImplementedError

    def draw(self, model, pixels: torch.Tensor, output, result: dict) -> torch.Tensor | None:
        """The image with the prediction drawn on it (uint8 CHW), or None when nothing is drawn."""
        return None

    def summary_line(self, result: dict) -> list[str]:
        """Lines that ``effnet predict`` prints for one image's ``format`` result."""
        lines = []
        for key, value in result.items():
            for item in value if isinstance(value, list) else [value]:
                lines.append(f"  {key}: {item}")
        return lines


def check_classes(model, classes: list[str], origin: str, data: str) -> None:
    """A model must predict exactly the data's classes, in the same order: the same count is not
    enough (digits and Fashion-MNIST both have 10)."""
    names = getattr(model, "class_names", None)
    count = model.config.num_classes
    if count != len(classes):
        raise UsageError(f"{origin} predicts {count} classes but {data} has {len(classes)}")
    if names is not None and list(names) != list(classes):
        raise UsageError(f"{origin} was trained on classes {list(names)[:4]}... but {data} has {list(classes)[:4]}...")
