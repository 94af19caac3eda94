"""Benchmark: every semantic model trained from scratch on `shapes` with its CPU config.

For each model it runs tools/train_net.py end to end in a fresh OUTPUT_DIR and reports the
wall time (ratio to the 15-minute budget), the final shapes_val mIoU (ratio to the 80
target), the parameter count and GFLOPs of one 512x512 image (fvcore, via detectron2's
FlopCountAnalysis), with the machine it ran on.

    python tools/benchmark_models.py [--models unet fcn ...] [--markdown docs/benchmarks_models.md]
"""

import argparse
import os
import sys

from . import common

MODELS = {
    "unet": "configs/shapes/unet_shapes.yaml",
    "fcn8s_vgg16": "configs/shapes/fcn8s_vgg16_shapes.yaml",
    "fcn_r18": "configs/shapes/fcn_R18_shapes.yaml",
    "deeplabv3_r18": "configs/shapes/deeplabv3_R18_shapes.yaml",
    "deeplabv3plus_r18": "configs/shapes/deeplabv3plus_R18_shapes.yaml",
}
BUDGET_S = 15 * 60
TARGET_MIOU = 80.0
COLUMNS = (
    "model", "config", "params (M)", "GFLOPs @512x512", "train+eval min (of 15)",
    "shapes_val mIoU (of 80)", "within targets",
)  # fmt: skip


def size_of(config: str):
    """(parameters in millions, GFLOPs of one 3x512x512 image) of the configured model."""
    import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

    # isort: split
    import torch
    from detectron2.modeling import build_model

    cfg = common.load_config(config, ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    image = torch.zeros(len(cfg.MODEL.PIXEL_MEAN), 512, 512)
    return params, common.fvcore_flops(model, [{"image": image}]) / 1e9


def train(name: str, config: str) -> dict:
    out = os.path.join(common.REPO, "output", "bench_models", name)
    res = common.train_net(config, out)
    res["miou"] = float("nan") if "error" in res else common.sem_seg_miou(out)
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--markdown", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    rows, ok = [], True
    for name in args.models:
        config = MODELS[name]
        params, gflops = size_of(config)
        res = train(name, config)
        passed = res["wall_s"] <= BUDGET_S and res["miou"] >= TARGET_MIOU
        ok &= passed
        cells = (
            name,
            f"`{config}`",
            f"{params:.2f}",
            f"{gflops:.1f}",
            f"{res['wall_s'] / 60:.1f} ({res['wall_s'] / BUDGET_S:.2f})",
            f"{res['miou']:.2f} ({res['miou'] / TARGET_MIOU:.2f})",
            "yes" if passed else "NO " + res.get("error", ""),
        )
        rows.append(common.markdown_row(cells))
        print(rows[-1], flush=True)
    lines = [
        f"Machine: {common.machine()}; one run per model, {common.today()}",
        "",
        *common.markdown_table(COLUMNS),
        *rows,
    ]
    common.emit(lines, args.markdown)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
