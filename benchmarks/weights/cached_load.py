"""A cached pretrained tag loads as fast as a plain effnet file of the same model.

A torchvision B0 (random weights with real BN statistics; the real file needs the network) is
imported as ``efficientnet_b0.tv_in1k`` into a fresh cache, exactly as ``effnet weights import``
does; the same model is also saved with ``effnet.save``. Then, in one process, interleaved:

- ``plain``: ``effnet.weights.io.load(file)`` of the plain file;
- ``cached``: ``effnet.weights.pretrained.load_pretrained(tag)``: the cache record, the size check,
  the same load.

    python benchmarks/weights/cached_load.py --out benchmarks/weights/cached_load.json

Run it alone on the machine: a second CPU-heavy process distorts every number."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torchvision

from effnet.core.machine import machine
from effnet.weights import catalog
from effnet.weights.io import load, save

TAG = "efficientnet_b0.tv_in1k"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["EFFNET_HOME"] = str(Path(scratch) / "home")
        from effnet.weights.pretrained import import_file, load_pretrained

        source = torchvision.models.efficientnet_b0()
        with torch.no_grad():  # real BN statistics, as a trained file has
            source.train()(torch.randn(8, 3, 64, 64))
        pth = Path(scratch) / "efficientnet_b0_rwightman-7f5810bc.pth"
        torch.save(source.state_dict(), pth)
        digest = hashlib.sha256(pth.read_bytes()).hexdigest()[:8]  # the real file's hash is not this one's
        catalog.CATALOG[TAG] = replace(catalog.CATALOG[TAG], sha256=digest)
        started = time.perf_counter()
        cached_path = import_file(TAG, pth).path
        convert_s = time.perf_counter() - started
        plain = save(load_pretrained(TAG), Path(scratch) / "plain.safetensors")

        times = {"plain": [], "cached": []}
        for _ in range(3):  # warm the page cache and the allocator for both
            load(plain), load_pretrained(TAG)
        for _ in range(args.repeats):
            for name, run in (("plain", lambda: load(plain)), ("cached", lambda: load_pretrained(TAG))):
                t = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t)
        medians = {k: statistics.median(v) for k, v in times.items()}
        result = {
            "command": "python benchmarks/weights/cached_load.py --out benchmarks/weights/cached_load.json",
            "machine": machine(),
            "model": "efficientnet_b0",
            "file_bytes": {"plain": plain.stat().st_size, "cached": cached_path.stat().st_size},
            "import_and_convert_s": round(convert_s, 3),
            "repeats": args.repeats,
            "median_ms": {k: round(1000 * v, 2) for k, v in medians.items()},
            "cached_over_plain": round(medians["cached"] / medians["plain"], 3),
            "target": "cached_over_plain <= 1.2",
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
