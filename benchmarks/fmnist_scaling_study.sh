#!/usr/bin/env bash
# The compound-scaling search and the scaling study on Fashion-MNIST (issue 5), as committed in
# docs/scaling-study/. Run from the repository root after `make test` (or `make .venv/.installed`):
#
#     bash benchmarks/fmnist_scaling_study.sh
#
# The baseline is B0 at half width and half depth on 48 px images (4.2 M MACs, 0.66 M params):
# small enough that a grid of 22 points and a study of 18 trainings fit in about 40 minutes on
# 2 CPU cores, and large enough that the last feature map is not 1x1 (at 32 px it is, and
# resolution then moves MACs in jumps). Every candidate trains 2 epochs on 8000 images.
set -euo pipefail
OUT=docs/scaling-study
mkdir -p "$OUT"
EFFNET=${EFFNET:-.venv/bin/effnet}
PROXY=(--data fashion-mnist --base-width 0.5 --base-depth 0.5 --image-size 48 --epochs 2 --limit-train 8000)

# Step 1: the grid. A 0.1 grid with |alpha*beta^2*gamma^2 - 2| <= 0.1 has 22 points.
"$EFFNET" search "${PROXY[@]}" --grid-step 0.1 --tolerance 0.1 --storage "sqlite:///$OUT/search.db" \
    --study fmnist --plot "$OUT/grid.png" --json > "$OUT/search.json"

# Step 2: compound scaling with the grid's best point against one-dimension scaling at matched MACs,
# two seeds each.
read -r A B G < <(python3 -c "import json; b = json.load(open('$OUT/search.json'))['best']; print(b['alpha'], b['beta'], b['gamma'])")
"$EFFNET" scaling-study "${PROXY[@]}" --alpha "$A" --beta "$B" --gamma "$G" --phis 0,1,2 --seeds 0,1 \
    --out "$OUT/searched" --json > /dev/null
