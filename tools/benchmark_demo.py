#!/usr/bin/env python
"""Benchmark of the README's first command (`make demo`), set-up already done.

Runs it end to end in a fresh OUTPUT_DIR, then prints: wall time (and its ratio to the
15-minute budget), the median training step time from detectron2's metrics.json, and the
final shapes_val mIoU (and its ratio to the 85 mIoU target), with the machine it ran on.

    python tools/benchmark_demo.py [--repeats N] [--markdown docs/benchmarks_demo.md]

Medians over --repeats runs (default 1: one run is ~10 minutes on a 2-core CPU).
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT_DIR = os.path.join(REPO, "output", "unet_shapes")
BUDGET_S = 15 * 60
TARGET_MIOU = 85.0


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def run_once() -> dict:
    shutil.rmtree(OUTPUT_DIR, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run(["make", "demo"], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"make demo failed with status {proc.returncode}")
    report = os.path.join(OUTPUT_DIR, "inference", "shapes_sem_seg_val", "sem_seg_evaluation.json")
    with open(report) as f:
        miou = json.load(f)["metrics"]["mIoU"]
    with open(os.path.join(OUTPUT_DIR, "metrics.json")) as f:
        step_times = [r["time"] for r in map(json.loads, f) if "time" in r]
    return {"wall_s": wall, "miou": miou, "step_s": statistics.median(step_times)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--markdown", help="also write the table to this Markdown file")
    args = parser.parse_args()
    runs = [run_once() for _ in range(args.repeats)]
    wall = statistics.median(r["wall_s"] for r in runs)
    miou = statistics.median(r["miou"] for r in runs)
    step = statistics.median(r["step_s"] for r in runs)
    rows = [
        (
            "make demo wall time",
            f"{wall / 60:.1f} min",
            f"{wall / BUDGET_S:.2f} of the 15 min budget",
        ),
        ("median train step (batch 8, 128x128)", f"{step:.3f} s", ""),
        ("shapes_val mIoU", f"{miou:.2f}", f"{miou / TARGET_MIOU:.3f} x the 85.0 target"),
    ]
    lines = [
        f"Machine: {machine()}; median of {len(runs)} run(s), {time.strftime('%Y-%m-%d')}",
        "",
        "| figure | value | ratio |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
    ]
    print("\n".join(lines))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
    ok = wall <= BUDGET_S and miou >= TARGET_MIOU
    print("PASS" if ok else "FAIL: outside the budget or below the target")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
