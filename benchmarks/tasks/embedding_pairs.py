"""A PNG of the verification proxy's predictions: test pairs of the unseen classes side by side,
each with the trained embedding's cosine similarity and whether it is the same "person", through
``effnet predict`` (which prints each image's embedding). Usage:

    python benchmarks/tasks/embedding_pairs.py --weights /tmp/bemb/arc2/best.safetensors \
        --pairs /tmp/bemb/fmnist-pairs/test/pairs.txt --out benchmarks/tasks/embedding_pairs.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import effnet
from PIL import Image, ImageDraw

from effnet.datasets.pairs import read_pairs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--pairs", type=Path, required=True)
    p.add_argument("--count", type=int, default=8, help="pairs shown: half same, half different")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    pairs = read_pairs(args.pairs)
    same = [i for i, s in enumerate(pairs.same) if s][: args.count // 2]
    other = [i for i, s in enumerate(pairs.same) if not s][: args.count // 2]
    chosen = [k for pair in zip(same, other, strict=True) for k in pair]
    files = sorted({f for k in chosen for f in (pairs.first[k], pairs.second[k])})
    predicted = json.loads(effnet("predict", *files, "--weights", args.weights, "--json"))
    vectors = {Path(r["image"]): np.array(r["embedding"]) for r in predicted}
    tile, scale = 28, 3
    sheet = Image.new("RGB", (len(chosen) * (2 * tile * scale + 12), tile * scale + 40), "white")
    draw = ImageDraw.Draw(sheet)
    for column, k in enumerate(chosen):
        a, b = Path(pairs.first[k]), Path(pairs.second[k])
        x = column * (2 * tile * scale + 12)
        for offset, path in ((0, a), (tile * scale, b)):
            image = Image.open(path).convert("RGB").resize((tile * scale, tile * scale), Image.NEAREST)
            sheet.paste(image, (x + offset, 0))
        cosine = float(vectors[a] @ vectors[b])
        draw.text((x + 2, tile * scale + 4), f"cos {cosine:+.2f}", fill="black")
        draw.text((x + 2, tile * scale + 20), "same" if pairs.same[k] else "different", fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)


if __name__ == "__main__":
    main()
