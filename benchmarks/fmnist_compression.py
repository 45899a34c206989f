"""Compression on real data (issue 6): pruning, int8 and distillation of a Fashion-MNIST model,
alone and as one pipeline, every figure from the effnet CLI. Writes the runs to runs/compression/
and the results to benchmarks/compression/ (summary.json, summary.md, the pipeline's report).

    python benchmarks/fmnist_compression.py    # the committed configuration: ~75 min on 2 idle cores

Every step is skipped when its result file exists and an interrupted training resumes, so running
the same command again continues where it stopped (delete benchmarks/compression/ and
runs/compression/ to start over).

The teacher is phi=-3 B0 at 48 px trained on 20k of the 54k training images: the targets are
differences between models measured side by side, which a smaller training set keeps affordable
without changing what is compared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from effnet.core.machine import machine

ROOT = Path(__file__).resolve().parent.parent
# The short-run recipe of the compression pipeline (effnet.training.recipe.SHORT_RUN at lr 0.004):
# the students trained alone and distilled use exactly what `effnet compress` uses.
RECIPE = [
    "--data", "fashion-mnist", "--image-size", "48", "--opt", "adamw", "--lr", "0.004", "--weight-decay", "0.01",
    "--sched", "cosine", "--augment", "light", "--ema-decay", "0", "--drop-path-rate", "0", "--bn-momentum", "0.1",
    "--channels-last", "--quiet",
]  # fmt: skip


def effnet(*args: str, log: list) -> str:
    command = [sys.executable, "-m", "effnet", *args]
    log.append("effnet " + " ".join(args))
    print(f"$ {log[-1]}", file=sys.stderr, flush=True)
    return subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout


def cached(path: Path, make) -> dict:
    """The JSON at path, made (and timed) only when missing."""
    if not path.exists():
        start = time.perf_counter()
        result = make()
        result["wall_seconds"] = round(time.perf_counter() - start, 1)
        result["machine"] = machine()  # each step's own: a later invocation may run on another machine
        # Paths relative to the repository: the results must not name this machine's folders.
        path.write_text(json.dumps(result, indent=2).replace(f"{ROOT}/", "") + "\n")
    return json.loads(path.read_text())


def resume(out: str) -> list[str]:
    """Continue a training run an interrupted invocation left behind (same command, same settings)."""
    return ["--resume"] if (Path(out) / "config.json").exists() else []


def test_top1(weights: str, log: list) -> float:
    return json.loads(effnet("eval", "--weights", weights, "--split", "test", "--json", log=log))["top1"]


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def machine_line(m: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return f"Machine: {m['cpu']}, {m['cpus']} CPUs, flags `{' '.join(m['cpu_flags']) or 'none'}`; {versions}."


def summary_markdown(summary: dict, args) -> str:
    p, lines = summary["prune"], []
    lines += [
        f"Command: `{summary['command']}`",
        "",
        machine_line(summary["machine"]),
        "",
        f"Teacher: phi=-3 B0 at 48 px, {args.teacher_epochs} epochs on {args.limit_train} images: "
        f"**{pct(summary['teacher_test_top1'])}%** test top-1.",
        "",
        "| pruning | MACs | params | test top-1 (%) | points lost |",
        "|---|---|---|---|---|",
        f"| {p['ratio']:.0%} of expansion channels, {args.finetune_epochs} epochs fine-tuning | {p['macs_ratio']:.2f}x "
        f"| {p['params'][0]:,} -> {p['params'][1]:,} | {pct(p['test_top1'])} | {p['points_lost']:.2f} |",
        "",
        "| int8 | params | fp32 top-1 (%) | int8 top-1 (%) | points lost | file vs fp32 | ORT latency b1 vs fp32 "
        "| OpenVINO latency b1 vs fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, key in (("B0 phi=-3", "int8"), ("Lite0 at the same width and depth", "int8_lite")):
        q = summary[key]
        lines.append(
            f"| {name} | {q['params']:,} | {pct(q['fp32_top1'])} | {pct(q['int8_top1'])} | {q['points_lost']:.2f} "
            f"| {q['size_ratio']:.3f}x | {q['latency_ratio']:.2f}x ({q['latency_ms'][1]:.2f} ms) "
            f"| {q['openvino_latency_ratio']:.2f}x ({q['openvino_latency_ms'][1]:.2f} ms) |"
        )
    d = summary["distillation"]
    seeds = sorted({k.split("-", 1)[1] for k in d})
    lines += ["", "| student phi=-4, same recipe and epochs | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |"]
    lines.append("|---|" + "---|" * (len(seeds) + 1))
    for kind in ("alone", "distilled"):
        values = [d[f"{kind}-{s}"] for s in seeds]
        lines.append(f"| {kind} | " + " | ".join(pct(v) for v in values) + f" | {pct(sum(values) / len(values))} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit-train", default="20000")
    parser.add_argument("--teacher-epochs", default="10")
    parser.add_argument("--student-epochs", default="5")
    parser.add_argument("--lite-epochs", default="5")
    parser.add_argument("--prune-ratio", default="0.6", help="0.6 of the expansion channels is 0.48x the MACs")
    parser.add_argument("--finetune-epochs", default="3")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "compression"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "compression"))
    args = parser.parse_args()
    runs, results = Path(args.runs), Path(args.results)
    runs.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    limit = ["--limit-train", args.limit_train]
    log: list[str] = []

    teacher = f"{runs}/teacher/best.safetensors"

    def train_teacher() -> dict:
        effnet("train", "--phi", "-3", *RECIPE, *limit, "--epochs", args.teacher_epochs, "--seed", "0",
               "--out", f"{runs}/teacher", *resume(f"{runs}/teacher"), log=log)  # fmt: skip
        return {"test_top1": test_top1(teacher, log)}

    base = cached(results / "teacher.json", train_teacher)

    def prune() -> dict:
        out = f"{runs}/pruned.safetensors"
        prune = ["prune", "--weights", teacher, "--ratio", args.prune_ratio, "--finetune-epochs", args.finetune_epochs]
        report = json.loads(effnet(*prune, *limit, "--out", out, "--json", log=log))
        return {**report, "test_top1": test_top1(out, log)}

    pruned = cached(results / "prune.json", prune)

    def quantize(weights: str, name: str) -> dict:
        # fp32 and int8 measured as the pipeline measures every stage: through ONNX files, latency interleaved
        shutil.rmtree(runs / name, ignore_errors=True)
        return json.loads(effnet("compress", "--weights", weights, "--steps", "quantize", "--out",
                                 f"{runs}/{name}", "--json", log=log))  # fmt: skip

    int8 = cached(results / "int8.json", lambda: quantize(teacher, "int8"))

    students = {}
    for seed in args.seeds.split(","):
        for kind in ("alone", "distilled"):

            def student(kind=kind, seed=seed) -> dict:
                out = f"{runs}/student-{kind}-{seed}"
                teach = ["distill", "--teacher", teacher] if kind == "distilled" else ["train"]
                effnet(*teach, "--phi", "-4", *RECIPE, *limit, "--epochs", args.student_epochs, "--seed", seed,
                       "--out", out, *resume(out), log=log)  # fmt: skip
                return {"test_top1": test_top1(f"{out}/best.safetensors", log)}

            students[f"{kind}-{seed}"] = cached(results / f"student-{kind}-{seed}.json", student)

    def pipeline() -> dict:
        out = runs / "pipeline"
        shutil.rmtree(out, ignore_errors=True)
        report = json.loads(effnet("compress", "--weights", teacher, "--steps", "distill,prune,quantize",
                                   "--epochs", args.student_epochs, "--prune-ratio", args.prune_ratio,
                                   "--finetune-epochs", args.finetune_epochs, *limit, "--out", str(out), "--json",
                                   log=log))  # fmt: skip
        for name in ("report.md", "accuracy_latency.png"):
            shutil.copyfile(out / name, results / f"pipeline_{name}")
        return report

    chain = cached(results / "pipeline.json", pipeline)

    # Lite0's architecture (ReLU6, no SE: made for int8) at the teacher's width and depth, same recipe
    lite = f"{runs}/lite/best.safetensors"

    def train_lite() -> dict:
        model = ["--model", "efficientnet_lite0", "--width", f"{1.1**-3:.4f}", "--depth", f"{1.2**-3:.4f}"]
        effnet("train", *model, *RECIPE, *limit, "--epochs", args.lite_epochs, "--seed", "0",
               "--out", f"{runs}/lite", *resume(f"{runs}/lite"), log=log)  # fmt: skip
        return quantize(lite, "lite-int8")

    lite_int8 = cached(results / "lite_int8.json", train_lite)

    def int8_summary(report: dict) -> dict:
        fp32, q = report["stages"]
        return {
            "params": fp32["params"],
            "macs": fp32["macs"],
            "fp32_top1": fp32["test_top1"],
            "int8_top1": q["test_top1"],
            "points_lost": round(100 * (fp32["test_top1"] - q["test_top1"]), 2),
            "size_ratio": round(q["file_bytes"] / fp32["file_bytes"], 3),
            "latency_ratio": round(q["latency_ms"] / fp32["latency_ms"], 3),
            "latency_ms": [fp32["latency_ms"], q["latency_ms"]],
            "openvino_latency_ratio": round(q["openvino_latency_ms"] / fp32["openvino_latency_ms"], 3),
            "openvino_latency_ms": [fp32["openvino_latency_ms"], q["openvino_latency_ms"]],
        }

    summary = {
        "command": " ".join(["python", "benchmarks/fmnist_compression.py", *sys.argv[1:]]),
        "commands_this_invocation": log,
        "machine": machine(),
        "teacher_test_top1": base["test_top1"],
        "prune": {
            "ratio": float(args.prune_ratio),
            "macs_ratio": pruned["macs_ratio"],
            "params": [pruned["params_before"], pruned["params_after"]],
            "test_top1": pruned["test_top1"],
            "points_lost": round(100 * (base["test_top1"] - pruned["test_top1"]), 2),
            # validation top-1 right after pruning, after BN re-estimation, after fine-tuning
            "val_top1_steps": [pruned.get(f"val_top1_{k}") for k in ("pruned", "recalibrated", "finetuned")],
        },
        "int8": int8_summary(int8),
        "int8_lite": int8_summary(lite_int8),
        "distillation": {k: v["test_top1"] for k, v in students.items()},
        "pipeline": [
            {
                k: s[k]
                for k in ("stage", "params", "macs", "file_bytes", "latency_ms", "openvino_latency_ms", "test_top1")
            }
            for s in chain["stages"]
        ],  # fmt: skip
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (results / "summary.md").write_text(summary_markdown(summary, args))
    print(
        json.dumps(
            {k: summary[k] for k in ("teacher_test_top1", "prune", "int8", "int8_lite", "distillation")}, indent=2
        )
    )


if __name__ == "__main__":
    main()
