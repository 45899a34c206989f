"""Semantic segmentation as a task: cross-entropy plus soft Dice (Dice keeps small foreground
classes, such as nuclei on a large background, from being drowned by background pixels), and
per-class IoU, mIoU, Dice and foreground IoU from one confusion matrix over all pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.utils import draw_segmentation_masks

from effnet.core.errors import UsageError
from effnet.datasets.masks import IGNORE, MaskDataset, load_masks
from effnet.models.backbone import backbone_config
from effnet.models.segmentation import OUT_INDICES, create_segmenter
from effnet.tasks.entry import PALETTE, EvalData, TaskEntry, check_classes


def soft_dice_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in the batch (ignored pixels left out)."""
    num_classes = logits.shape[1]
    valid = (masks != IGNORE).unsqueeze(1)
    probs = logits.float().softmax(1) * valid
    one_hot = F.one_hot(masks.clamp(max=num_classes - 1), num_classes).permute(0, 3, 1, 2) * valid
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    cardinality = probs.sum(dims) + one_hot.sum(dims)
    present = one_hot.sum(dims) > 0
    dice = (2 * intersection + 1.0) / (cardinality + 1.0)
    return 1.0 - dice[present].mean() if present.any() else logits.sum() * 0.0


def scores_from_confusion(confusion: torch.Tensor, classes: list[str]) -> dict:
    """IoU and Dice per class, their means over the classes that occur (in truth or prediction),
    and the foreground IoU (every non-background class against the background)."""
    confusion = confusion.double()
    tp = confusion.diag()
    truth, predicted = confusion.sum(1), confusion.sum(0)
    union = truth + predicted - tp
    seen = union > 0
    iou = torch.where(seen, tp / union.clamp(min=1), torch.nan)
    dice = torch.where(seen, 2 * tp / (truth + predicted).clamp(min=1), torch.nan)
    background_right = confusion[0, 0]
    foreground_right = confusion[1:, 1:].sum()
    total = confusion.sum()
    fg_union = total - background_right
    return {
        "miou": iou[seen].mean().item() if seen.any() else 0.0,
        "mean_dice": dice[seen].mean().item() if seen.any() else 0.0,
        "foreground_iou": (foreground_right / fg_union).item() if fg_union > 0 else 0.0,
        "foreground_dice": (2 * foreground_right / (total - background_right + foreground_right)).item()
        if fg_union > 0
        else 0.0,
        "pixel_accuracy": (tp.sum() / total.clamp(min=1)).item(),
        "per_class_iou": dict(zip(classes, iou.tolist(), strict=True)),
        "per_class_dice": dict(zip(classes, dice.tolist(), strict=True)),
    }


class SegmentationMetrics:
    def __init__(self, classes: list[str]):
        self.classes = classes
        k = len(classes)
        self.confusion = torch.zeros(k, k, dtype=torch.int64)
        self.loss_sum, self.n = 0.0, 0

    def update(self, logits: torch.Tensor, masks: torch.Tensor, loss_sum: float | None = None) -> None:
        logits, masks = logits.float().cpu(), masks.cpu()
        if loss_sum is None:
            loss_sum = F.cross_entropy(logits, masks, ignore_index=IGNORE).item() * len(masks)
        self.loss_sum += loss_sum
        valid = masks != IGNORE
        k = len(self.classes)
        cells = torch.bincount(masks[valid] * k + logits.argmax(1)[valid], minlength=k * k)
        self.confusion += cells.view(k, k)
        self.n += len(masks)

    def summary(self) -> dict:
        result = scores_from_confusion(self.confusion, self.classes)
        return {**result, "loss": self.loss_sum / max(1, self.n), "n": self.n, "score": result["miou"]}


class SegmentationTask:
    name = "segmentation"
    val_keys = ("miou", "foreground_iou", "mean_dice")
    val_batch = 32

    def __init__(self, classes: list[str], dice_weight: float = 1.0):
        self.classes, self.dice_weight = classes, dice_weight

    def split_batch(self, batch):
        images, masks = batch
        return images, masks, {}

    def to_device(self, masks: torch.Tensor, device: torch.device) -> torch.Tensor:
        return masks.to(device)

    def forward(self, net, images, masks):
        return net(images)

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE)
        return ce + self.dice_weight * soft_dice_loss(logits, masks)

    def train_counts(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
        valid = masks != IGNORE
        right = (logits.argmax(1) == masks) & valid
        return {"n": len(masks), "pixels_right": right.sum().item(), "pixels": valid.sum().item()}

    def train_summary(self, totals: dict) -> dict:
        return {"train_pixel_accuracy": totals.get("pixels_right", 0) / max(1, totals.get("pixels", 0))}

    def metrics(self) -> SegmentationMetrics:
        return SegmentationMetrics(self.classes)


class SegmentationEntry(TaskEntry):
    """A segmenter is evaluated at its training size and predicts at each image's own size."""

    name = "segmentation"

    def training_task(self, model, dice_weight: float = 1.0, **options) -> SegmentationTask:
        return SegmentationTask(self._names(model), dice_weight)

    def input_size(self, config) -> tuple[int, int]:
        return config.backbone.in_chans, config.image_size

    def training_data(self, cfg):
        return load_masks(cfg.data, val_split=cfg.val_split, seed=cfg.seed, limit_train=cfg.limit_train)

    def training_setup(self, cfg, data, trunk, continuing=None):
        train_split = data.split("train")
        sizes = set(train_split.sizes) | set(data.split("val").sizes)
        if cfg.image_size is None and len(sizes) > 1:
            raise UsageError(f"--data {cfg.data}: images of {len(sizes)} sizes; pass --image-size to resize them")
        image_size = cfg.image_size or max(next(iter(sizes)))
        model = create_segmenter(backbone_config(trunk, out_indices=OUT_INDICES), num_classes=len(data.classes),
                                 image_size=image_size, class_names=data.classes)  # fmt: skip
        pre = model.preprocessing
        augment = cfg.augment in ("light", "paper")
        train_set = MaskDataset(train_split, pre.mean, pre.std, augment=augment, size=cfg.image_size)
        val_set = MaskDataset(data.split("val"), pre.mean, pre.std, size=cfg.image_size)
        return model, SegmentationTask(data.classes), train_set, val_set

    def eval_data(self, model, options: dict, split: str, training: dict, *, origin: str = "the model",
                  **kwargs) -> EvalData:  # fmt: skip
        options = {k: v for k, v in options.items() if k != "data_dir"}
        bundle = load_masks(**options)
        check_classes(model, bundle.classes, origin, f"--data {options['data']}")
        pre = model.preprocessing
        dataset = MaskDataset(bundle.split(split), pre.mean, pre.std, size=training.get("image_size"))
        return EvalData(dataset, None, SegmentationMetrics(bundle.classes), bundle.classes)

    def preparer(self, model):
        normalize = v2.Normalize(model.preprocessing.mean, model.preprocessing.std)
        return lambda image, pixels: normalize(pixels.float() / 255)  # at the image's own size: a class per pixel

    def _names(self, model) -> list[str]:
        return model.class_names or [str(k) for k in range(model.config.num_classes)]

    def format(self, model, output, *, top_k: int = 5, score_threshold: float = 0.5) -> dict:
        names = self._names(model)
        counts = torch.bincount(output.argmax(0).flatten(), minlength=len(names))
        return {"pixels": {names[k]: int(c) for k, c in enumerate(counts) if c}}

    def draw(self, model, pixels: torch.Tensor, output, result: dict) -> torch.Tensor:
        classes = output.argmax(0)
        k = len(self._names(model))
        masks = torch.stack([classes == c for c in range(1, k)])
        return draw_segmentation_masks(
            pixels, masks, alpha=0.5, colors=[PALETTE[c % len(PALETTE)] for c in range(k - 1)]
        )


ENTRY = SegmentationEntry()
