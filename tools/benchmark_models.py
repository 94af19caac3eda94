#!/usr/bin/env python
"""Benchmark: every semantic model trained from scratch on `shapes` with its CPU config.

For each model it runs tools/train_net.py end to end in a fresh OUTPUT_DIR and reports the
wall time (ratio to the 15-minute budget), the final shapes_val mIoU (ratio to the 80
target), the parameter count and GFLOPs of one 512x512 image (fvcore, via detectron2's
FlopCountAnalysis), with the machine it ran on.

    python tools/benchmark_models.py [--models unet fcn ...] [--markdown docs/benchmarks_models.md]
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

MODELS = {
    "unet": "configs/shapes/unet_shapes.yaml",
    "fcn8s_vgg16": "configs/shapes/fcn8s_vgg16_shapes.yaml",
    "fcn_r18": "configs/shapes/fcn_R18_shapes.yaml",
    "deeplabv3_r18": "configs/shapes/deeplabv3_R18_shapes.yaml",
    "deeplabv3plus_r18": "configs/shapes/deeplabv3plus_R18_shapes.yaml",
}
BUDGET_S = 15 * 60
TARGET_MIOU = 80.0


def size_of(config: str):
    """(parameters in millions, GFLOPs of one 3x512x512 image) of the configured model."""
    import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

    # isort: split
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.utils.analysis import FlopCountAnalysis

    cfg = get_cfg()
    seg_plugins.add_seg_plugins_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, config))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    image = torch.zeros(len(cfg.MODEL.PIXEL_MEAN), 512, 512)
    flops = FlopCountAnalysis(model, [{"image": image}])
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return params, flops.total() / 1e9


def train(name: str, config: str) -> dict:
    out = os.path.join(REPO, "output", "bench_models", name)
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", config, "OUTPUT_DIR", out],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        return {"wall_s": wall, "miou": float("nan"), "error": f"exit {proc.returncode}"}
    dataset = "shapes_sem_seg_val"
    with open(os.path.join(out, "inference", dataset, "sem_seg_evaluation.json")) as f:
        miou = json.load(f)["metrics"]["mIoU"]
    return {"wall_s": wall, "miou": miou}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--markdown", help="also write the table to this Markdown file")
    args = parser.parse_args()
    rows, ok = [], True
    for name in args.models:
        config = MODELS[name]
        params, gflops = size_of(config)
        res = train(name, config)
        passed = res["wall_s"] <= BUDGET_S and res["miou"] >= TARGET_MIOU
        ok &= passed
        rows.append(
            f"| {name} | `{config}` | {params:.2f} | {gflops:.1f} | {res['wall_s'] / 60:.1f} "
            f"({res['wall_s'] / BUDGET_S:.2f}) | {res['miou']:.2f} "
            f"({res['miou'] / TARGET_MIOU:.2f})"
            f" | {'yes' if passed else 'NO ' + res.get('error', '')} |"
        )
        print(rows[-1], flush=True)
    lines = [
        f"Machine: {machine()}; one run per model, {time.strftime('%Y-%m-%d')}",
        "",
        "| model | config | params (M) | GFLOPs @512x512 | train+eval min (of 15) "
        "| shapes_val mIoU (of 80) | within targets |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    print("\n".join(lines))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
