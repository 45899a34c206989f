#!/bin/sh
# Progressive learning vs fixed-size training on Fashion-MNIST, each run a 60-minute budget of
# this 2-core CPU: the same model (compound-scaled B0, phi=-3), the full training set (54,000
# images; 6,000 held out for validation), the same end size (64 px) and end regularization
# (dropout 0.3, random erasing 0.25) and the same recipe. The epochs are what fits the budget
# (measured s/epoch: ~265 at 64 px, ~140 at 32 px): the fixed run trains 13 epochs at 64 px; the
# progressive run 17 epochs in 4 stages from 32 px and dropout 0.1 (32, 43, 53, 64 px).
# No RandAugment: on this CPU its per-image operations halve the data pipeline's rate.
# Run alone on the machine, one after the other.
set -e
python benchmarks/fashion_mnist_accuracy.py --epochs 17 --dropout 0.3 --random-erase 0.25 \
    --progressive 4 --start-size 32 --start-dropout 0.1 \
    --out runs/fmnist-progressive60 --summary benchmarks/progressive/progressive60_accuracy.json
python benchmarks/fashion_mnist_accuracy.py --epochs 13 --dropout 0.3 --random-erase 0.25 \
    --out runs/fmnist-fixed60 --summary benchmarks/progressive/fixed60_accuracy.json
