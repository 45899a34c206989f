"""Evaluating a trained file (safetensors, an fp32 or int8 ONNX export, an OpenVINO IR) on a dataset split, with
the preprocessing that travels with it and the data it was trained on unless told otherwise."""

from __future__ import annotations

from effnet.datasets.loading import ImageDataset, load_data, ordered_loader
from effnet.deploy.engines import inference_form, open_model
from effnet.tasks.classification import check_classes, evaluate


def evaluate_weights(
    weights: str,
    data: str | None = None,
    *,
    split: str = "test",
    data_dir: str | None = None,
    val_split: float | None = None,
    seed: int | None = None,
    batch_size: int = 128,
    bad_images: str = "error",
    engine: str | None = None,
    **engine_options,
) -> tuple[dict, list[str]]:
    """Top-1, top-5, per-class accuracy, loss and the confusion matrix of ``weights`` on ``split``.

    Files written by ``effnet train`` remember their data, data directory, validation split and
    seed, so ``split="val"`` gives back exactly the images the run validated on. The model runs
    in the same inference form and preprocessing as ``effnet predict``."""
    trained = open_model(weights, engine=engine, **engine_options)
    options = trained.provenance.data_options(data, data_dir=data_dir, val_split=val_split, seed=seed, origin=weights)
    bundle = load_data(**options, bad_images=bad_images)
    model = trained.model
    check_classes(model, bundle.classes, f"{weights}", f"--data {options['data']}")
    dataset = ImageDataset(bundle.split(split), model.preprocessing.transform())
    loader = ordered_loader(dataset, batch_size)
    return evaluate(inference_form(model), loader, model.config.num_classes), bundle.classes
