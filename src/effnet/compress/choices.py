"""The names compression offers on the command line, free of heavy imports (see deploy.choices)."""

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# post-training, quantization-aware fine-tuning first, or (LiteRT) dynamic-range with no calibration
SCHEMES = ("ptq", "qat", "dynamic")
STEPS = ("distill", "prune", "quantize")  # effnet compress --steps
