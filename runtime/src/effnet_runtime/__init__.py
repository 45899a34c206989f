"""effnet-runtime: effnet's exported classifiers (.tflite, .onnx, OpenVINO .xml) on NumPy, Pillow
and the runtimes alone, for devices where PyTorch does not fit.

    import effnet_runtime
    model = effnet_runtime.open("model.tflite")
    model.predict(["photo.jpg"], top_k=3)   # [{"top": [{"label", "index", "prob"}, ...]}]
"""

from effnet_runtime.errors import RuntimeUsageError
from effnet_runtime.files import Model
from effnet_runtime.files import open_model as open

__all__ = ["Model", "RuntimeUsageError", "open"]
__version__ = "0.1.0"
