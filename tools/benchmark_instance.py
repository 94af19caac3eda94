#!/usr/bin/env python
"""Benchmark: Mask R-CNN and PanopticFPN (our semantic head as its semantic branch) trained
from scratch on `shapes` with their CPU configs, end to end through tools/train_net.py.

Reports the wall time against the 30-minute budget, shapes_val mask AP against the 50 target
(box AP beside it) and, for PanopticFPN, the mIoU of its semantic branch from the same run,
with the machine it ran on. Each run gets a fresh OUTPUT_DIR; the figures are read from the
run's metrics.json (detectron2's EvalHook writes the final evaluation there).

    python tools/benchmark_instance.py [--cases mask_rcnn panoptic_fpn] [--markdown FILE]

Runs alone on the machine give honest times: on 2 cores a second CPU-heavy job slows
training several-fold (OpenMP threads contend).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
from benchmark_demo import machine  # noqa: E402

CASES = {
    "mask_rcnn": "configs/shapes/mask_rcnn_R18_FPN_GN_shapes.yaml",
    "panoptic_fpn": "configs/shapes/panoptic_fpn_R18_FPN_GN_shapes.yaml",
}
BUDGET_S = 30 * 60
TARGET_MASK_AP = 50.0


def final_metrics(output_dir: str) -> dict:
    """The last value of every key in OUTPUT_DIR/metrics.json (one JSON object per line)."""
    last = {}
    with open(os.path.join(output_dir, "metrics.json")) as f:
        for line in f:
            if line.strip():
                last.update(json.loads(line))
    return last


def _max_iter(config: str, opts: list) -> int:
    """SOLVER.MAX_ITER of the run (the config, then the overrides)."""
    import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

    # isort: split
    from detectron2.config import get_cfg

    cfg = get_cfg()
    seg_plugins.add_seg_plugins_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, config))
    cfg.merge_from_list(list(opts))
    return cfg.SOLVER.MAX_ITER


def train(name: str, config: str, opts: list) -> dict:
    out = os.path.join(REPO, "output", "bench_instance", name)
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    cmd = [sys.executable, "tools/train_net.py", "--config-file", config, "OUTPUT_DIR", out]
    proc = subprocess.run(cmd + opts, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        return {"wall_s": wall, "error": f"exit {proc.returncode}"}
    metrics = final_metrics(out)
    return {
        "wall_s": wall,
        "mask_ap": metrics.get("segm/AP", float("nan")),
        "box_ap": metrics.get("bbox/AP", float("nan")),
        "miou": metrics.get("sem_seg/mIoU", float("nan")),
        "iters": _max_iter(config, opts),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--markdown", help="also write the table to this Markdown file")
    parser.add_argument("opts", nargs="*", help="config overrides for every run (KEY VALUE)")
    args = parser.parse_args()
    rows, ok = [], True
    load_before = os.getloadavg()[0]
    for name in args.cases:
        res = train(name, CASES[name], args.opts)
        if "error" in res:
            ok = False
            rows.append(f"| {name} | `{CASES[name]}` | failed: {res['error']} | | | | |")
            print(rows[-1], flush=True)
            continue
        passed = res["wall_s"] <= BUDGET_S and res["mask_ap"] >= TARGET_MASK_AP
        ok &= passed
        miou = "" if res["miou"] != res["miou"] else f"{res['miou']:.2f}"
        rows.append(
            f"| {name} | `{CASES[name]}` | {res['iters']} | {res['wall_s'] / 60:.1f} "
            f"({res['wall_s'] / BUDGET_S:.2f}) | {res['mask_ap']:.2f} "
            f"({res['mask_ap'] / TARGET_MASK_AP:.2f}) | {res['box_ap']:.2f} | {miou} "
            f"| {'yes' if passed else 'NO'} |"
        )
        print(rows[-1], flush=True)
    lines = [
        f"Machine: {machine()}; one run per case, {time.strftime('%Y-%m-%d')}; "
        f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
        "",
        "| case | config | iterations | train+eval min (of 30) | shapes_val mask AP (of 50) "
        "| box AP | mIoU (semantic branch) | within targets |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    print("\n".join(lines))
    if args.markdown:
        from seg_plugins.utils.file_io import atomic_write_text

        atomic_write_text(args.markdown, "\n".join(lines) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
