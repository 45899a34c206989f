#!/bin/sh
# Progressive learning vs fixed-size training on Fashion-MNIST, the same model (compound-scaled
# B0, phi=-3), the same images (20,000 of the training set), the same end size (64 px), the same
# end regularization (dropout 0.3, RandAugment magnitude 6) and about the same wall-clock budget:
# the fixed run trains 12 epochs at 64 px; the progressive run 18 epochs in 4 stages from 32 px,
# dropout 0.1 and magnitude 2 up to the end values. Run alone on the machine, one after the other.
set -e
python benchmarks/fashion_mnist_accuracy.py --epochs 12 --limit-train 20000 --dropout 0.3 --randaug 6 \
    --out runs/fmnist-fixed --summary benchmarks/progressive/fixed_accuracy.json
python benchmarks/fashion_mnist_accuracy.py --epochs 18 --limit-train 20000 --dropout 0.3 --randaug 6 \
    --progressive 4 --start-size 32 --start-dropout 0.1 --start-randaug 2 \
    --out runs/fmnist-progressive --summary benchmarks/progressive/progressive_accuracy.json
