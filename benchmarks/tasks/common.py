"""What the task benchmarks share: running effnet commands as a user would, timing them, and a
grid PNG of predictions drawn on test images."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image


def effnet(*args, capture: bool = True) -> str:
    """Run ``effnet ARGS`` in a new process (the real command); its stdout, or raise."""
    cmd = [sys.executable, "-m", "effnet", *map(str, args)]
    print("$ effnet " + " ".join(map(str, args)), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE if capture else None, text=True)
    if proc.returncode:
        raise SystemExit(f"effnet {args[0]} failed with exit code {proc.returncode}")
    return proc.stdout or ""


def timed(*args) -> tuple[dict | list, float]:
    start = time.perf_counter()
    out = effnet(*args)
    return json.loads(out), time.perf_counter() - start


def grid(images: list[Path], out: Path, columns: int = 4, scale: int = 2) -> None:
    """The drawn predictions side by side, enlarged, as one PNG."""
    tiles = [Image.open(p).convert("RGB") for p in images]
    w, h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * w * scale, rows * h * scale), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile.resize((w * scale, h * scale), Image.NEAREST), ((i % columns) * w * scale,
                                                                         (i // columns) * h * scale))  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
