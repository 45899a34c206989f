"""Task names and detector heads, importable without torch (the CLI builds its options from them).
DETECTOR_HEADS mirrors effnet.models.detection.HEADS (a test keeps them equal)."""

TASKS = ("classification", "detection", "segmentation", "embedding")
DETECTOR_HEADS = ("faster_rcnn", "fcos", "retinanet")
EVAL_TASKS = (*TASKS, "verification")

# the validation score each task's trainer keeps the best epoch by (its metrics' "score")
TASK_SCORES = {"detection": "mAP", "segmentation": "mIoU", "embedding": "ROC-AUC"}
