"""Running trained models: export (ONNX, TorchScript), engines (torch, ONNX Runtime), predict,
evaluate a file on data, latency benchmarks. Never imports the trainer."""
