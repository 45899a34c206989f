"""The names compression offers on the command line, free of heavy imports (see deploy.choices)."""

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
SCHEMES = ("ptq", "qat")  # post-training, or quantization-aware fine-tuning first
STEPS = ("distill", "prune", "quantize")  # effnet compress --steps
