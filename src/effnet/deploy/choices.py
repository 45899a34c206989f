"""The names deploy offers on the command line, defined here, free of heavy imports, so that the
CLI can build its parser (and answer --help) before torch is loaded."""

ENGINES = ("torch", "onnxruntime", "openvino", "litert", "executorch")  # what runs a model in predict, eval, ...
BENCH_ENGINES = ("torchvision", "timm", "effnet", "effnet_onnxruntime", "torchvision_onnxruntime", "effnet_openvino",
                 "torchvision_openvino", "effnet_litert", "effnet_executorch")  # fmt: skip
FORMATS = ("onnx", "openvino", "torchscript", "litert", "executorch")  # effnet export --format
FORMAT_SUFFIXES = {"onnx": (".onnx",), "openvino": (".xml",), "torchscript": (".pt", ".pth", ".torchscript"),
                   "litert": (".tflite",), "executorch": (".pte",)}  # fmt: skip
MOBILE_FORMATS = ("litert", "executorch")  # fixed batch, no opset; quantize --format takes them too
# the engine that runs an exported file, by its suffix
ENGINE_BY_SUFFIX = {".onnx": "onnxruntime", ".xml": "openvino", ".tflite": "litert", ".pte": "executorch"}
OPENVINO_HINTS = ("latency", "throughput")  # OpenVINO's PERFORMANCE_HINT
OPENVINO_PRECISIONS = ("f32", "bf16")  # its INFERENCE_PRECISION_HINT; f32 keeps parity with eager
DEFAULT_OPSET = 18
