"""The task registry: the one list of tasks, and where each one's code lives.

Every command that works on a model (train, eval, predict, export, quantize, prune, serve) asks
this registry what the model's task needs, instead of branching on task names. A task is a
module with a ``TaskEntry`` (``effnet.tasks.entry``) plus one ``register`` line; the module is
imported on first use, so the CLI can list task names (and answer ``--help``) before torch loads.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field

from effnet.core.errors import UsageError

DEFAULT_TASK = "classification"  # what a model without a ``task`` attribute (a plain classifier) is


@dataclass
class Registration:
    name: str
    metric: str  # the name of the task's score: what ``score`` holds in every report
    where: str | object  # "module:attribute" of its TaskEntry, or the entry itself
    summary: str = ""
    needs_folder: bool = False  # trains on a data folder only (not the built-in digits, fashion-mnist)
    _entry: object | None = field(default=None, repr=False)

    def entry(self):
        if self._entry is None:
            if isinstance(self.where, str):
                module, _, attribute = self.where.partition(":")
                self._entry = getattr(importlib.import_module(module), attribute or "ENTRY")
            else:
                self._entry = self.where
        return self._entry


_TASKS: dict[str, Registration] = {}


def register(name: str, *, metric: str, where: str | object, summary: str = "", model=None,
             needs_folder: bool = False) -> Registration:  # fmt: skip
    """Add a task. ``where`` is ``"package.module:ENTRY"`` (imported on first use) or a
    ``TaskEntry`` object; ``model``, a ``(config type, build(config, class_names))`` pair, lets
    ``effnet.open`` rebuild the task's models from their files (the built-in tasks' models are
    known to ``effnet.models.task_models`` already). A name can be registered once."""
    if name in _TASKS:
        raise ValueError(f"task {name!r} is registered already ({_TASKS[name].where})")
    if model is not None:
        from effnet.models.task_models import register_model

        register_model(name, *model)
    _TASKS[name] = Registration(name, metric, where, summary, needs_folder)
    return _TASKS[name]


def unregister(name: str) -> None:
    """Remove a task (tests register toy tasks and take them away again)."""
    if _TASKS.pop(name, None) is not None:
        from effnet.models.task_models import unregister_model  # imported here: this module stays torch-free

        unregister_model(name)


def task_names() -> tuple[str, ...]:
    return tuple(_TASKS)


def registration(name: str) -> Registration:
    if name not in _TASKS:
        close = difflib.get_close_matches(name, _TASKS, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(_TASKS)}"
        raise UsageError(f"unknown task {name!r}{hint}")
    return _TASKS[name]


def get_task(name: str):
    """The ``TaskEntry`` of task ``name``."""
    return registration(name).entry()


def task_of(model) -> str:
    """The task of a model, an opened file or an exported graph (a plain classifier has none)."""
    return getattr(model, "task", None) or DEFAULT_TASK


def entry_of(model):
    """The ``TaskEntry`` of ``model``'s task."""
    return get_task(task_of(model))


register("classification", metric="top1", where="effnet.tasks.classification:ENTRY",
         summary="one label per image: top-1/top-5 accuracy")  # fmt: skip
register("detection", needs_folder=True, metric="mAP", where="effnet.tasks.detection:ENTRY",
         summary="boxes and labels (torchvision heads on an EfficientNet FPN): COCO mAP")  # fmt: skip
register("segmentation", needs_folder=True, metric="mIoU", where="effnet.tasks.segmentation:ENTRY",
         summary="a class per pixel (U-Net decoder): mIoU, Dice")  # fmt: skip
register("embedding", needs_folder=True, metric="ROC-AUC", where="effnet.tasks.embedding:ENTRY",
         summary="unit vectors for similarity (ArcFace): verification ROC-AUC")  # fmt: skip

register_task = register  # the name the top level (effnet.register_task) exports it under
