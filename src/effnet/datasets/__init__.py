"""Training data: Fashion-MNIST, scikit-learn digits, or an image-folder tree; image decoding
and the bad-image checks; train-time augmentation."""

from effnet.core.lazy import lazy_exports

_EXPORTS = {
    "BUILTIN": "effnet.datasets.loading",
    "Data": "effnet.datasets.loading",
    "ImageDataset": "effnet.datasets.loading",
    "load_data": "effnet.datasets.loading",
    "CheckReport": "effnet.datasets.check",
    "check_files": "effnet.datasets.check",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
