"""Training-step cost: effnet vs timm, same model (B0), same batch, same optimizer; and, with
``--impls``, any of our models against each other (EfficientNetV2-S against B4, the V2 paper's
comparison point).

Time and memory are measured apart, because each needs its own arrangement:
* time: one process per round builds all three models and interleaves their steps, so the
  process-level noise of this shared machine hits them alike (the same model's step time
  differs by up to 1.6x between fresh processes here: 0.53 s vs 0.87 s at 128x32);
  the table gives the median over rounds of each round's median step, and its ratio to timm.
* memory: one process per implementation, so peak RSS (ru_maxrss) belongs to that model alone.

    python benchmarks/training_cost.py --configs 32x224,128x32 --rounds 3 --json benchmarks/training_cost.json
    python benchmarks/training_cost.py --impls effnet_b4,effnet_v2_s --configs 32x128 --rounds 3 \
        --json benchmarks/training_cost_v2.json

The ratio columns are to the first implementation listed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from effnet.core.machine import machine

IMPLS = ["timm", "effnet", "effnet_memory_efficient"]
# effnet models other than B0, by implementation name
MODELS = {"effnet_b4": "efficientnet_b4", "effnet_v2_s": "efficientnetv2_s"}


def make_step(impl: str, batch: int, size: int):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    if impl == "timm":
        import timm

        model = timm.create_model("efficientnet_b0", drop_path_rate=0.2)  # effnet's default, the paper's
    else:
        import effnet

        model = effnet.create_model(MODELS.get(impl, "efficientnet_b0"))
        model.set_memory_efficient(impl == "effnet_memory_efficient")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 1000, (batch,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_worker(impls: list[str], batch: int, size: int, steps: int, min_seconds: float) -> dict:
    import time

    runners = {impl: make_step(impl, batch, size) for impl in impls}
    for step in runners.values():
        step()  # warm-up: allocator, oneDNN primitives
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    order = list(impls)
    while min(len(t) for t in times.values()) < steps or min(sum(t) for t in times.values()) < min_seconds:
        for impl in order:
            start = time.perf_counter()
            runners[impl]()
            times[impl].append(time.perf_counter() - start)
        order = order[1:] + order[:1]
    return {impl: statistics.median(t) for impl, t in times.items()}


def memory_worker(impl: str, batch: int, size: int) -> float:
    import resource

    step = make_step(impl, batch, size)
    for _ in range(3):
        step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _spawn(*args: str) -> object:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="32x224,128x32", help="BATCHxSIZE,...")
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"of {', '.join(IMPLS + list(MODELS))}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="measured steps per model and round, at least")
    parser.add_argument("--min-seconds", type=float, default=8.0, help="measured time per model and round, at least")
    parser.add_argument("--json")
    parser.add_argument("--time-worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    impls = args.impls.split(",")
    unknown = [i for i in impls if i not in IMPLS and i not in MODELS]
    if unknown:
        parser.error(f"unknown --impls {', '.join(unknown)}")
    if args.time_worker:
        batch, size = map(int, args.time_worker)
        print(json.dumps(time_worker(impls, batch, size, args.steps, args.min_seconds)))
        return
    if args.memory_worker:
        impl, batch, size = args.memory_worker
        print(json.dumps(memory_worker(impl, int(batch), int(size))))
        return

    rows = []
    for config in args.configs.split(","):
        batch, size = map(int, config.split("x"))
        timing = ["--impls", args.impls, "--steps", str(args.steps), "--min-seconds", str(args.min_seconds)]
        rounds = [_spawn(*timing, "--time-worker", str(batch), str(size)) for _ in range(args.rounds)]
        memory = {impl: _spawn("--memory-worker", impl, str(batch), str(size)) for impl in impls}
        first = impls[0]
        for impl in impls:
            rows.append(
                {
                    "impl": impl,
                    "batch": batch,
                    "size": size,
                    "step_s": statistics.median(r[impl] for r in rounds),
                    "step_s_by_round": [r[impl] for r in rounds],
                    f"time_vs_{first}": statistics.median(r[impl] / r[first] for r in rounds),
                    "peak_rss_mb": memory[impl],
                    f"memory_vs_{first}": memory[impl] / memory[first],
                }
            )
    first, record = impls[0], machine()
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    print(f"# {record['cpu']}, {record['cpus']} CPUs, flags {' '.join(record['cpu_flags']) or 'none'}; {versions}")
    print(f"{'impl':<25} {'batch':>5} {'size':>5} {'step s':>8} {'peak MB':>8} {'time/' + first:>14} "
          f"{'mem/' + first:>14}")  # fmt: skip
    for r in rows:
        print(f"{r['impl']:<25} {r['batch']:>5} {r['size']:>5} {r['step_s']:>8.2f} {r['peak_rss_mb']:>8.0f} "
              f"{r[f'time_vs_{first}']:>14.2f} {r[f'memory_vs_{first}']:>14.2f}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": record, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
