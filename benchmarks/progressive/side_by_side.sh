#!/bin/sh
# Progressive learning vs fixed-size training on Fashion-MNIST, the same model (compound-scaled
# B0, phi=-3), the same images (20,000 of the training set), the same end size (64 px), the same
# end regularization (dropout 0.3) and about the same wall-clock budget: the fixed run trains 6
# epochs at 64 px; the progressive run  9 epochs in 4 stages from 32 px and dropout 0.1 up to the
# end values. No RandAugment: on this CPU its per-image PIL operations halve the data pipeline's
# rate (106 against ~230 img/s at 64 px), which would time the augmentation, not the training.
# Run alone on the machine, one after the other.
set -e
python benchmarks/fashion_mnist_accuracy.py --epochs 6 --limit-train 20000 --dropout 0.3 \
    --out runs/fmnist-fixed --summary benchmarks/progressive/fixed_accuracy.json
python benchmarks/fashion_mnist_accuracy.py --epochs 9 --limit-train 20000 --dropout 0.3 \
    --progressive 4 --start-size 32 --start-dropout 0.1 \
    --out runs/fmnist-progressive --summary benchmarks/progressive/progressive_accuracy.json
