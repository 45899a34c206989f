"""Embeddings as a task: ArcFace logits and cross-entropy in training; verification metrics
(is this pair the same identity?) in evaluation.

Verification follows LFW's protocol: the pairs fall into 10 folds; for each fold the cosine
threshold that is most accurate on the other nine is applied to it, and the accuracy is the mean
over folds. ROC-AUC and TAR at FAR = 1e-2 need no threshold and are computed over all pairs.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from effnet.datasets.loading import ImageDataset, load_data
from effnet.datasets.transforms import train_transform
from effnet.models.embedding import create_embedder
from effnet.models.preprocessing import Preprocessing
from effnet.tasks.entry import EvalData, TaskEntry

MAX_VAL_PAIRS = 200_000  # validation between epochs samples at most this many pairs


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """Share of same-identity pairs accepted at the threshold that accepts ``far`` of the others."""
    impostor = np.sort(scores[~same])[::-1]
    if len(impostor) == 0 or same.sum() == 0:
        return float("nan")
    k = int(np.floor(far * len(impostor)))
    threshold = impostor[k] if k < len(impostor) else -np.inf
    return float((scores[same] > threshold).mean())


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The most accurate threshold (accept score >= threshold), in O(n log n): accepting the k
    highest scores is right for the same pairs among them and the other pairs below them."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    accepted_same = np.concatenate([[0], np.cumsum(y)])
    accepted_other = np.concatenate([[0], np.cumsum(~y)])
    correct = accepted_same + (len(y) - y.sum()) - accepted_other
    cut = np.ones(len(y) + 1, bool)
    cut[1:-1] = s[:-1] != s[1:]  # a threshold cannot split equal scores
    k = int(np.argmax(np.where(cut, correct, -1)))
    return float(s[k - 1]) if k > 0 else float("inf")


def verification_metrics(scores: np.ndarray, same: np.ndarray, folds: np.ndarray | None = None) -> dict:
    """``scores``: similarity of each pair; ``same``: whether it is one identity; ``folds``: each
    pair's fold (LFW: 10 folds of 600 pairs); without folds, 10 folds are dealt in order."""
    from sklearn.metrics import roc_auc_score

    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    if folds is None:
        folds = np.arange(len(scores)) % 10
    accuracies = []
    for fold in np.unique(folds):
        test = folds == fold
        threshold = best_threshold(scores[~test], same[~test]) if (~test).any() else 0.0
        accuracies.append(float(((scores[test] >= threshold) == same[test]).mean()))
    both = 0 < same.sum() < len(same)
    return {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "roc_auc": float(roc_auc_score(same, scores)) if both else float("nan"),
        "tar_at_far_1e-2": tar_at_far(scores, same, 1e-2),
        "pairs": int(len(scores)),
        "same_pairs": int(same.sum()),
    }


def all_pairs(labels: torch.Tensor, limit: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (i < j) of a set, all of them or a seeded sample of ``limit``."""
    n = len(labels)
    i, j = torch.triu_indices(n, n, offset=1)
    if len(i) > limit:
        keep = torch.randperm(len(i), generator=torch.Generator().manual_seed(seed))[:limit]
        i, j = i[keep], j[keep]
    return i, j


class VerificationMetrics:
    """Embeddings of a labelled set; every pair (or a sample) verified."""

    def __init__(self):
        self.embeddings, self.labels = [], []

    def update(self, embeddings: torch.Tensor, labels: torch.Tensor, loss_sum: float | None = None) -> None:
        self.embeddings.append(embeddings.float().cpu())
        self.labels.append(labels.cpu())

    def summary(self) -> dict:
        embeddings, labels = torch.cat(self.embeddings), torch.cat(self.labels)
        i, j = all_pairs(labels, MAX_VAL_PAIRS)
        scores = (embeddings[i] * embeddings[j]).sum(1)
        result = verification_metrics(scores.numpy(), (labels[i] == labels[j]).numpy())
        return {**result, "n": len(labels), "score": result["roc_auc"]}


class EmbeddingTask:
    """(image, identity) batches; the model turns them into ArcFace logits in training."""

    name = "embedding"
    val_keys = ("roc_auc", "accuracy", "tar_at_far_1e-2")
    val_batch = 128

    def split_batch(self, batch):
        images, labels, *rest = batch
        return images, labels, {}

    def to_device(self, labels: torch.Tensor, device: torch.device) -> torch.Tensor:
        return labels.to(device)

    def forward(self, net, images, labels):
        return net(images, labels)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)

    def train_counts(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {"correct": (logits.argmax(1) == labels).sum().item(), "n": len(labels)}

    def train_summary(self, totals: dict) -> dict:
        return {"train_margin_top1": totals.get("correct", 0) / max(1, totals.get("n", 0))}

    def metrics(self) -> VerificationMetrics:
        return VerificationMetrics()


class EmbeddingEntry(TaskEntry):
    """Embeddings are scored by verifying every pair of a labelled split (identities, not classes:
    the split's people need not be the training run's)."""

    name = "embedding"

    def training_task(self, model, **options) -> EmbeddingTask:
        return EmbeddingTask()

    def input_size(self, config) -> tuple[int, int]:
        return config.backbone.in_chans, config.backbone.resolution

    def training_data(self, cfg):
        return load_data(cfg.data, val_split=cfg.val_split, seed=cfg.seed, limit_train=cfg.limit_train,
                         bad_images=cfg.bad_images)  # fmt: skip

    def training_setup(self, cfg, data, trunk, continuing=None):
        size = cfg.image_size or trunk.resolution
        model = create_embedder(replace(trunk, resolution=size, num_classes=0, features_only=False),
                                num_classes=len(data.classes), margin=cfg.arcface_margin, scale=cfg.arcface_scale,
                                class_names=data.classes)  # fmt: skip
        pre = model.preprocessing
        model.preprocessing = Preprocessing(size, size, pre.interpolation, pre.mean, pre.std)
        train_set = ImageDataset(data.split("train"), train_transform(model.preprocessing, cfg.augment))
        val_set = ImageDataset(data.split("val"), model.preprocessing.transform())
        return model, EmbeddingTask(), train_set, val_set

    def eval_data(self, model, options: dict, split: str, training: dict, *, origin: str = "the model",
                  **kwargs) -> EvalData:  # fmt: skip
        options = {k: v for k, v in options.items() if k != "data_dir"}
        bundle = load_data(**options)
        dataset = ImageDataset(bundle.split(split), model.preprocessing.transform())
        return EvalData(dataset, None, VerificationMetrics(), bundle.classes)

    def format(self, model, output, *, top_k: int = 5, score_threshold: float = 0.5) -> dict:
        return {"embedding": [round(float(v), 6) for v in output]}

    def summary_line(self, result: dict) -> list[str]:
        return [f"  {len(result['embedding'])}-d embedding"]


ENTRY = EmbeddingEntry()
