from effnet.models.efficientnet import EfficientNet

__all__ = ["EfficientNet"]
