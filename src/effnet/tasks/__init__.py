"""Tasks: what a trainer or an evaluation needs to know about one kind of problem (the batch
format, the loss, the metrics). The trainer core (training) and evaluation of exported files
(deploy) both use them, and never each other, so tasks sit below both.

``create_detector``, ``create_segmenter`` and ``create_embedder`` (defined with the other models
in effnet.models) are re-exported here, beside the tasks that train them."""

from effnet.core.lazy import lazy_exports

_EXPORTS = {
    "create_detector": "effnet.tasks.detection",  # EfficientDet (pretrained too) or a torchvision head
    "create_segmenter": "effnet.models.segmentation",
    "create_embedder": "effnet.models.embedding",
    "DetectionTask": "effnet.tasks.detection",
    "SegmentationTask": "effnet.tasks.segmentation",
    "EmbeddingTask": "effnet.tasks.embedding",
    "ClassificationTask": "effnet.tasks.classification",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
