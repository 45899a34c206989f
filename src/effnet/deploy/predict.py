"""Predictions for image files from a model of any task, with the preprocessing that travels with
it: top-k classes, boxes, class masks or embeddings (what the task's entry formats), and with
``out_dir`` the boxes or masks drawn onto a copy of each image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2

from effnet.core.errors import UsageError
from effnet.core.fileio import atomic_write
from effnet.datasets.images import decode_each
from effnet.deploy.engines import inference_form
from effnet.tasks.entry import TaskEntry
from effnet.tasks.registry import entry_of, task_of


@dataclass
class Prediction:
    image: str
    result: dict  # the task's: {"top": [...]}, {"detections": [...]}, {"pixels": {...}}, {"embedding": [...]}
    output: str | None = None  # the picture written, with out_dir

    def to_dict(self) -> dict:
        return {"image": self.image, **self.result, **({"output": self.output} if self.output else {})}


def output_paths(paths: list[str], out_dir: str | Path) -> dict[str, Path]:
    """``<out_dir>/<stem>.png`` for each input, refusing a picture that would overwrite an input
    image or another input's picture."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the pictures")
    inputs = {Path(p).resolve(): p for p in paths}
    targets: dict[str, Path] = {}
    seen: dict[Path, str] = {}
    for p in paths:
        target = out / f"{Path(p).stem}.png"
        resolved = target.resolve()
        if resolved in inputs:
            raise UsageError(f"--out {out}: the picture of {p} would overwrite the input image {inputs[resolved]}")
        if resolved in seen and seen[resolved] != p:
            raise UsageError(f"--out {out}: {seen[resolved]} and {p} would both be drawn to {target}")
        seen[resolved] = p
        targets[p] = target
    return targets


def _save_png(tensor: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(tensor.permute(1, 2, 0).numpy())
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def draws(entry: TaskEntry) -> bool:
    return type(entry).draw is not TaskEntry.draw


@torch.inference_mode()
def predict(model, paths: list[str], top_k: int = 5, *, out_dir: str | Path | None = None,
            score_threshold: float = 0.5) -> tuple[list[Prediction], list[UsageError]]:  # fmt: skip
    """A prediction for every decodable image; undecodable ones are returned as errors, so one bad
    file does not cost the others their results."""
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    entry = entry_of(model)
    if out_dir is not None and not draws(entry):
        raise UsageError(f"--out draws boxes and masks; a {task_of(model)} model's predictions are printed")
    targets = output_paths(paths, out_dir) if out_dir is not None else {}
    net, prepare = inference_form(model).eval(), entry.preparer(model)
    results, errors = [], []
    for path, image in decode_each(paths, errors):
        pixels = v2.functional.pil_to_tensor(image)  # uint8 CHW, what the drawing functions take
        (output,) = entry.run(net, [prepare(image, pixels)])
        result = entry.format(model, output, top_k=top_k, score_threshold=score_threshold)
        target = targets.get(path)
        if target is not None:
            _save_png(entry.draw(model, pixels, output, result), target)
        results.append(Prediction(str(path), result, str(target) if target is not None else None))
    return results, errors
