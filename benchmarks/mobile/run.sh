#!/usr/bin/env bash
# Every benchmark of benchmarks/mobile/ in order, alone on the machine (~25 min on 2 cores).
# The int8 part needs a trained Fashion-MNIST classifier: the real ImageNet Lite0 fine-tuned on
# 10,000 training images at 64 px for 2 epochs (~4 min here), written to runs/mobile_fmnist.
set -euo pipefail
cd "$(dirname "$0")/../.."
E=.venv/bin/effnet
P=.venv/bin/python
make .venv/.installed .venv-runtime/.installed
$P benchmarks/mobile/mobile.py parity --out benchmarks/mobile/parity.json
[ -f runs/mobile_fmnist/best.safetensors ] || $E train --model efficientnet_lite0 --weights lite0 \
  --data fashion-mnist --image-size 64 --epochs 2 --limit-train 10000 --out runs/mobile_fmnist --quiet
$P benchmarks/mobile/mobile.py int8 --weights runs/mobile_fmnist/best.safetensors --out benchmarks/mobile/int8.json
$P benchmarks/mobile/mobile.py latency --min-seconds 4 --out benchmarks/mobile/latency.json
$P benchmarks/mobile/mobile.py runtime --out benchmarks/mobile/runtime.json
