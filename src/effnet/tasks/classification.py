"""Image classification as a task: cross-entropy (with label smoothing), and top-1, top-5,
per-class accuracy, loss and the confusion matrix of a model on a dataset."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from effnet.core.errors import UsageError
from effnet.datasets.loading import ImageDataset, load_data
from effnet.tasks.entry import EvalData, TaskEntry, check_classes


@torch.inference_mode()
def evaluate(
    model, loader, num_classes: int, channels_last: bool = False, amp: str = "none", device: str = "cpu"
) -> dict:
    """Metrics of ``model`` (a torch module or an engine such as ONNX Runtime's) over ``loader``."""
    model.eval()
    metrics = ClassificationMetrics(num_classes)
    fmt = torch.channels_last if channels_last else torch.preserve_format
    for images, labels in loader:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            logits = model(images.to(device, memory_format=fmt))
        metrics.update(logits, labels)
    return metrics.summary()


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


class ClassificationMetrics:
    """Confusion matrix, top-5 hits and summed loss over batches of logits."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.top5_hits, self.loss_sum, self.n = 0, 0.0, 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: float | None = None) -> None:
        logits, labels = logits.float().cpu(), labels.cpu()
        if loss_sum is None:
            loss_sum = F.cross_entropy(logits, labels, reduction="sum").item()
        self.loss_sum += loss_sum
        k = min(5, self.num_classes)
        self.top5_hits += (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum().item()
        cells = torch.bincount(labels * self.num_classes + logits.argmax(1), minlength=self.num_classes**2)
        self.confusion += cells.view(self.num_classes, self.num_classes)
        self.n += len(labels)

    def summary(self) -> dict:
        result = summarize(self.confusion, self.top5_hits, self.loss_sum, self.n)
        return {**result, "score": result["top1"]}


class ClassificationTask:
    """(image, label) batches, cross-entropy with label smoothing, accuracy metrics."""

    name = "classification"
    val_keys = ("top1", "top5")  # reported per epoch as val_top1, val_top5 (beside val_loss)
    val_batch = 64

    def __init__(self, num_classes: int, label_smoothing: float = 0.0):
        self.num_classes, self.label_smoothing = num_classes, label_smoothing

    def split_batch(self, batch):
        images, labels, *rest = batch
        return images, labels, {"index": rest[0]} if rest else {}

    def to_device(self, labels: torch.Tensor, device: torch.device) -> torch.Tensor:
        return labels.to(device)

    def forward(self, net, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return net(images)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def train_counts(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {"correct": (logits.argmax(1) == labels).sum().item(), "n": len(labels)}

    def train_summary(self, totals: dict) -> dict:
        return {"train_top1": totals.get("correct", 0) / max(1, totals.get("n", 0))}

    def metrics(self) -> ClassificationMetrics:
        return ClassificationMetrics(self.num_classes)


class ClassificationEntry(TaskEntry):
    name = "classification"
    max_eval_batch = None

    def training_task(self, model, label_smoothing: float = 0.0, **options) -> ClassificationTask:
        if not hasattr(model, "config"):
            raise UsageError(f"a {type(model).__name__} does not say how many classes it predicts: give "
                             f"ClassificationTask(num_classes) instead of the task's name")  # fmt: skip
        return ClassificationTask(model.config.num_classes, label_smoothing)

    def eval_data(self, model, options: dict, split: str, training: dict, *, origin: str = "the model",
                  bad_images: str = "error", progress: bool = False, **kwargs) -> EvalData:  # fmt: skip
        bundle = load_data(**options, bad_images=bad_images, progress=progress)
        check_classes(model, bundle.classes, origin, f"--data {options['data']}")
        dataset = ImageDataset(bundle.split(split), model.preprocessing.transform())
        return EvalData(dataset, None, ClassificationMetrics(model.config.num_classes), bundle.classes)

    def format(self, model, output, *, top_k: int = 5, score_threshold: float = 0.5) -> dict:
        probs = output.float().softmax(-1)
        values, indices = probs.topk(min(top_k, probs.numel()))
        names = model.class_names
        return {"top": [{"label": names[i] if names else str(i), "index": int(i), "prob": float(p)}
                        for p, i in zip(values.tolist(), indices.tolist(), strict=True)]}  # fmt: skip

    def summary_line(self, result: dict) -> list[str]:
        return [f"  {t['prob']:7.2%}  {t['label']} ({t['index']})" for t in result["top"]]


ENTRY = ClassificationEntry()
