#!/usr/bin/env bash
# The CUDA paths, on a GPU machine (run through the device tool when one is lent; CI has none):
#   1. training with --device cuda, bf16 autocast and channels_last, then evaluation of its weights;
#   2. the same run continued with --resume from its state file;
#   3. distillation on CUDA (teacher and student on the GPU);
#   4. the latency-budget fit of `effnet search` timed on the GPU (--device cuda).
# Output: $OUT/cuda_check.txt (committed as benchmarks/cuda_check.txt).
set -euo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
LOG=${OUT:-/tmp}/cuda_check.txt
exec > >(tee "$LOG") 2>&1
set -x
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
COMMON=(--phi -3 --data digits --image-size 64 --batch-size 64 --opt adamw --lr 0.004 --sched cosine
        --augment light --ema-decay 0.99 --bn-momentum 0.1 --device cuda --amp bf16 --channels-last --quiet)
rm -rf /tmp/cuda-run /tmp/cuda-kd
python3 -m effnet train "${COMMON[@]}" --epochs 4 --checkpoint-every 10 --out /tmp/cuda-run --json
python3 -m effnet eval --weights /tmp/cuda-run/best.safetensors --json | head -5
# Resume: a finished run resumed is a no-op that still reports its last epoch.
python3 -m effnet train "${COMMON[@]}" --epochs 4 --checkpoint-every 10 --out /tmp/cuda-run --resume --json
python3 -m effnet distill --teacher /tmp/cuda-run/best.safetensors --phi -4 --data digits --image-size 64 \
    --epochs 2 --batch-size 64 --device cuda --amp bf16 --channels-last --quiet --out /tmp/cuda-kd --json
# Budget: 1.5x the baseline's own GPU latency (batch 1 is launch-bound on a GPU, so latency grows slowly with phi).
BUDGET=$(python3 -c "from effnet.search.proxy import Proxy; from effnet.search.latency import measure_latency_ms as m; p = Proxy(); print(round(1.5 * m(p.config(p.scaled(), 10), 'cuda'), 2))")
python3 -m effnet search --alpha 1.2 --beta 1.1 --gamma 1.15 --image-size 224 --latency-budget-ms "$BUDGET" --device cuda --json \
    | python3 -c "import json,sys; b=json.load(sys.stdin)['latency_budget']; print({k: b[k] for k in ('phi','latency_ms','width','depth','resolution','macs')}); print([(m['phi'], round(m['latency_ms'], 3)) for m in b['measurements']])"
