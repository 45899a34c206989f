"""Detector heads, importable without torch (the CLI builds its options from them). The task names
live in the task registry (effnet.tasks.registry), which is as light. DETECTOR_HEADS mirrors
effnet.models.detection.HEADS (a test keeps them equal)."""

DETECTOR_HEADS = ("faster_rcnn", "fcos", "retinanet")
