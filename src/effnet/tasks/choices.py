"""Detector heads, importable without torch (the CLI builds its options from them). The task names
live in the task registry (effnet.tasks.registry), which is as light. DETECTOR_HEADS mirrors
effnet.models.detection.HEADS (torchvision's heads on an FPN) plus EfficientDet (a test keeps them
equal)."""

DETECTOR_HEADS = ("faster_rcnn", "fcos", "retinanet", "efficientdet")
EFFICIENTDET_PREFIX = "efficientdet_"  # --model efficientdet_d0 ... lite4: an EfficientDet variant, not a trunk
