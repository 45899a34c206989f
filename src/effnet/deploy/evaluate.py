"""Evaluating a model of any task (a ``.safetensors`` file, an fp32 or int8 ONNX export, an OpenVINO
IR, or a model already open) on a split of its data, with the preprocessing that travels with it
and the data it was trained on unless told otherwise; and verifying face pairs (LFW's protocol)
with an embedding model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from effnet.core.errors import UsageError
from effnet.datasets.images import load_rgb
from effnet.datasets.loading import ordered_loader
from effnet.datasets.pairs import read_pairs
from effnet.deploy.engines import inference_form, open_model
from effnet.tasks.embedding import verification_metrics
from effnet.tasks.registry import entry_of, registration, task_of
from effnet.weights.trained import Trained


def as_trained(weights, **open_options) -> Trained:
    """``weights`` opened (a path or tag), or as it is when it is open already."""
    if isinstance(weights, Trained):
        return weights
    return open_model(str(weights), **open_options)


@torch.inference_mode()
def evaluate(
    weights: str | os.PathLike | Trained,
    data: str | None = None,
    *,
    split: str = "test",
    data_dir: str | None = None,
    val_split: float | None = None,
    seed: int | None = None,
    batch_size: int = 128,
    bad_images: str = "error",
    annotations: str | None = None,
    engine: str | None = None,
    **engine_options,
) -> dict:
    """The metrics of ``weights`` on ``split``: every task reports ``score`` (what a run keeps its
    best model by) and ``metric`` (its name: top1, mAP, mIoU, ROC-AUC) beside its own figures.

    Files written by ``effnet train`` remember their data, data directory, validation split and
    seed, so ``split="val"`` gives back exactly the images the run validated on. The model runs
    in the same inference form and preprocessing as ``effnet predict``."""
    trained = as_trained(weights, engine=engine, **engine_options)
    origin = str(trained.path)
    options = trained.provenance.data_options(data, data_dir=data_dir, val_split=val_split, seed=seed, origin=origin)
    model = trained.model
    entry = entry_of(model)
    part = entry.eval_data(model, options, split, trained.provenance.training, origin=origin, bad_images=bad_images,
                           annotations=annotations)  # fmt: skip
    net = inference_form(model).eval()
    batch = min(batch_size, entry.max_eval_batch or batch_size)
    for inputs, targets in ordered_loader(part.dataset, batch, collate_fn=part.collate):
        part.metrics.update(net(inputs), targets)
    task = task_of(model)
    return {"task": task, "split": split, "metric": registration(task).metric, "classes": part.classes,
            **part.metrics.summary()}  # fmt: skip


@torch.inference_mode()
def embed_files(model, paths: list[Path], batch_size: int = 64) -> torch.Tensor:
    transform = model.preprocessing.transform()
    out = []
    for start in range(0, len(paths), batch_size):
        batch = torch.stack([transform(load_rgb(p)) for p in paths[start : start + batch_size]])
        out.append(model(batch))
    return torch.cat(out)


def verify_pairs(weights, pairs_file: str | os.PathLike, people: str | os.PathLike | None = None, **open_options):
    """LFW's protocol on ``pairs_file``: 10-fold accuracy, ROC-AUC and TAR at FAR 1e-2 of the
    cosine similarity between the two embeddings of each pair."""
    trained = as_trained(weights, **open_options)
    model = trained.model.eval()
    if task_of(model) != "embedding":
        raise UsageError(f"{trained.path}: --task verification needs an embedding model, not {task_of(model)}")
    pairs = read_pairs(pairs_file, people)
    unique = sorted(set(pairs.first) | set(pairs.second))
    index = {p: i for i, p in enumerate(unique)}
    embeddings = embed_files(model, unique)
    a = embeddings[[index[p] for p in pairs.first]]
    b = embeddings[[index[p] for p in pairs.second]]
    scores = (a * b).sum(1).numpy()
    result = verification_metrics(scores, np.array(pairs.same), np.array(pairs.fold))
    return {"task": "verification", "metric": "accuracy", "score": result["accuracy"], "images": len(unique),
            **result}  # fmt: skip
