"""Compression: structured pruning, knowledge distillation, int8 quantization."""
