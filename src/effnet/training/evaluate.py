"""Accuracy, per-class accuracy, loss and the confusion matrix of a model on a dataset."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.inference_mode()
def evaluate(
    model, loader, num_classes: int, channels_last: bool = False, amp: str = "none", device: str = "cpu"
) -> dict:
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    top5_hits, loss_sum, n = 0, 0.0, 0
    for images, labels in loader:
        images = images.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            logits = model(images)
        logits = logits.float().cpu()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        k = min(5, num_classes)
        top5_hits += (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum().item()
        confusion += torch.bincount(labels * num_classes + logits.argmax(1), minlength=num_classes**2).view(
            num_classes, num_classes
        )
        n += len(labels)
    return summarize(confusion, top5_hits, loss_sum, n)


def summarize(confusion: torch.Tensor, top5_hits: int, loss_sum: float, n: int) -> dict:
    per_class_total = confusion.sum(1).clamp(min=1)
    return {
        "top1": confusion.diag().sum().item() / max(1, n),
        "top5": top5_hits / max(1, n),
        "loss": loss_sum / max(1, n),
        "n": n,
        "per_class": (confusion.diag() / per_class_total).tolist(),
        "confusion": confusion.tolist(),
    }


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
) -> tuple[dict, list[str]]:
    """Evaluate a weights file on a dataset split with the model's own preprocessing.

    Files written by ``effnet train`` remember their data, validation split and seed, so
    ``--split val`` gives back exactly the images the run validated on."""
    import json

    from effnet.datasets import ImageDataset, load_data
    from effnet.datasets.transforms import eval_transform
    from effnet.errors import UsageError
    from effnet.weights import load, read_metadata

    if str(weights).endswith(".onnx"):  # an fp32 or int8 export, run by ONNX Runtime
        from effnet.runtime import OnnxModel

        model = OnnxModel(weights)
        training = model.training
    else:
        model = load(weights)
        training = (
            json.loads(read_metadata(weights).get("training", "{}")) if str(weights).endswith(".safetensors") else {}
        )
    data = data or training.get("data")
    if data is None:
        raise UsageError(f"{weights} does not say what it was trained on; pass --data")
    bundle = load_data(
        data,
        data_dir=data_dir if data_dir is not None else training.get("data_dir"),
        val_split=val_split if val_split is not None else training.get("val_split", 0.1),
        seed=seed if seed is not None else training.get("seed", 0),
        bad_images=bad_images,
    )
    check_classes(model, bundle.classes, f"{weights}", f"--data {data}")
    classes = model.config.num_classes
    pre = model.preprocessing
    dataset = ImageDataset(bundle.split(split), eval_transform(pre.resolution, pre.mean, pre.std))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    result = evaluate(model, loader, classes)
    return result, bundle.classes


def check_classes(model, classes: list[str], model_name: str, data_name: str) -> None:
    """The model must predict exactly the data's classes, in the same order: same count is not
    enough (digits and Fashion-MNIST both have 10)."""
    from effnet.errors import UsageError

    if model.config.num_classes != len(classes):
        raise UsageError(f"{model_name} predicts {model.config.num_classes} classes but {data_name} has {len(classes)}")
    names = getattr(model, "class_names", None)
    if names and list(names) != list(classes):
        raise UsageError(
            f"{model_name} was trained on classes {list(names)[:4]}... but {data_name} has {list(classes)[:4]}..."
        )
