"""Two detectors' prediction grids (``detection.py --plot``, drawn on the same first test canvases
of the deterministic FMNIST-Det) one above the other, each under its caption, as one PNG.

    python benchmarks/tasks/side_by_side.py benchmarks/tasks/detection_plain_6ep.png "Faster R-CNN, Lite0" \\
        benchmarks/tasks/detection_efficientdet_plain.png "EfficientDet-Lite0" \\
        --out benchmarks/tasks/detection_side_by_side.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

CAPTION = 28  # px of white above each grid for its caption


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pairs", nargs="+", help="PNG CAPTION [PNG CAPTION ...]")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if len(args.pairs) % 2:
        raise SystemExit("give PNG CAPTION pairs")
    pairs = zip(args.pairs[::2], args.pairs[1::2], strict=True)
    grids = [(Image.open(png).convert("RGB"), caption) for png, caption in pairs]
    width = max(g.width for g, _ in grids)
    sheet = Image.new("RGB", (width, sum(g.height + CAPTION for g, _ in grids)), "white")
    draw, y = ImageDraw.Draw(sheet), 0
    for grid, caption in grids:
        draw.text((8, y + 8), caption, fill="black")
        sheet.paste(grid, (0, y + CAPTION))
        y += grid.height + CAPTION
    sheet.save(args.out)


if __name__ == "__main__":
    main()
