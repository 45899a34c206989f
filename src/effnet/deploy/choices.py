"""The names deploy offers on the command line, defined here, free of heavy imports, so that the
CLI can build its parser (and answer --help) before torch is loaded."""

ENGINES = ("torch", "onnxruntime")  # what runs a model in predict and eval
BENCH_ENGINES = ("torchvision", "timm", "effnet", "effnet_onnxruntime", "torchvision_onnxruntime")
FORMATS = ("onnx", "torchscript")  # effnet export --format
FORMAT_SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".torchscript")}
DEFAULT_OPSET = 18
