"""The names deploy offers on the command line, defined here, free of heavy imports, so that the
CLI can build its parser (and answer --help) before torch is loaded."""

ENGINES = ("torch", "onnxruntime", "openvino")  # what runs a model in predict, eval, search, compress
BENCH_ENGINES = ("torchvision", "timm", "effnet", "effnet_onnxruntime", "torchvision_onnxruntime", "effnet_openvino",
                 "torchvision_openvino")  # fmt: skip
FORMATS = ("onnx", "openvino", "torchscript")  # effnet export --format
FORMAT_SUFFIXES = {"onnx": (".onnx",), "openvino": (".xml",), "torchscript": (".pt", ".pth", ".torchscript")}
OPENVINO_HINTS = ("latency", "throughput")  # OpenVINO's PERFORMANCE_HINT
OPENVINO_PRECISIONS = ("f32", "bf16")  # its INFERENCE_PRECISION_HINT; f32 keeps parity with eager
DEFAULT_OPSET = 18
