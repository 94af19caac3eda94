"""Benchmark of the README's first command (`make demo`), set-up already done.

Runs it end to end in a fresh OUTPUT_DIR, then prints: wall time (and its ratio to the
15-minute budget), the median training step time from detectron2's metrics.json, and the
final shapes_val mIoU (and its ratio to the 85 mIoU target), with the machine it ran on.

    python tools/benchmark_demo.py [--repeats N] [--markdown docs/benchmarks_demo.md]

Medians over --repeats runs (default 1: one run is ~10 minutes on a 2-core CPU).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

from . import common

OUTPUT_DIR = os.path.join(common.REPO, "output", "unet_shapes")
BUDGET_S = 15 * 60
TARGET_MIOU = 85.0


def run_once() -> dict:
    shutil.rmtree(OUTPUT_DIR, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run(["make", "demo"], cwd=common.REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"make demo failed with status {proc.returncode}")
    step_times = [r["time"] for r in common.metrics_records(OUTPUT_DIR) if "time" in r]
    return {
        "wall_s": wall,
        "miou": common.sem_seg_miou(OUTPUT_DIR),
        "step_s": statistics.median(step_times),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--markdown", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
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
        f"Machine: {common.machine()}; median of {len(runs)} run(s), {common.today()}",
        "",
        *common.markdown_table(("figure", "value", "ratio"), rows),
    ]
    common.emit(lines, args.markdown)
    ok = wall <= BUDGET_S and miou >= TARGET_MIOU
    print("PASS" if ok else "FAIL: outside the budget or below the target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
