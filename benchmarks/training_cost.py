"""Training-step cost: effnet vs timm, same model (B0), same batch, same optimizer.

Each measurement runs in its own process, so peak RSS (ru_maxrss) belongs to that model alone;
the implementations alternate over rounds so that machine noise hits them alike. The table gives
the median step time and the peak memory, each also as a ratio to timm in the same run.

    python benchmarks/training_cost.py --configs 32x224,128x32 --rounds 2 --json benchmarks/training_cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

IMPLS = ["timm", "effnet", "effnet_memory_efficient"]


def worker(impl: str, batch: int, size: int, steps: int, min_seconds: float) -> dict:
    import resource
    import time

    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    if impl == "timm":
        import timm

        model = timm.create_model("efficientnet_b0", drop_path_rate=0.2)  # effnet's default, the paper's
    else:
        import effnet

        model = effnet.create_model("efficientnet_b0").set_memory_efficient(impl == "effnet_memory_efficient")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 1000, (batch,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: allocator, oneDNN primitives
    # Short steps repeat until min_seconds are measured: a median of three sub-second steps
    # from a fresh process is mostly noise.
    times = []
    while len(times) < steps or sum(times) < min_seconds:
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"impl": impl, "batch": batch, "size": size, "step_s": statistics.median(times), "peak_rss_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="32x224,128x32", help="BATCHxSIZE,...")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="measured steps, at least")
    parser.add_argument("--min-seconds", type=float, default=8.0, help="measured time per process, at least")
    parser.add_argument("--json")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        impl, batch, size = args.worker
        print(json.dumps(worker(impl, int(batch), int(size), args.steps, args.min_seconds)))
        return

    results: dict[tuple, list[dict]] = {}
    for config in args.configs.split(","):
        batch, size = map(int, config.split("x"))
        for r in range(args.rounds):
            order = IMPLS if r % 2 == 0 else IMPLS[::-1]
            for impl in order:
                out = subprocess.run(
                    [sys.executable, __file__, "--steps", str(args.steps), "--min-seconds", str(args.min_seconds),
                     "--worker", impl, str(batch), str(size)],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                results.setdefault((batch, size, impl), []).append(json.loads(out.stdout))

    rows = []
    for (batch, size, impl), runs in results.items():
        rows.append(
            {
                "impl": impl,
                "batch": batch,
                "size": size,
                "step_s": statistics.median(r["step_s"] for r in runs),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                "rounds": len(runs),
            }
        )
    for row in rows:
        timm = next(r for r in rows if r["impl"] == "timm" and (r["batch"], r["size"]) == (row["batch"], row["size"]))
        row["time_vs_timm"] = row["step_s"] / timm["step_s"]
        row["memory_vs_timm"] = row["peak_rss_mb"] / timm["peak_rss_mb"]
    print(f"{'impl':<25} {'batch':>5} {'size':>5} {'step s':>8} {'peak MB':>8} {'time/timm':>9} {'mem/timm':>9}")
    for r in rows:
        print(f"{r['impl']:<25} {r['batch']:>5} {r['size']:>5} {r['step_s']:>8.2f} {r['peak_rss_mb']:>8.0f} "
              f"{r['time_vs_timm']:>9.2f} {r['memory_vs_timm']:>9.2f}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
