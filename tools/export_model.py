#!/usr/bin/env python
"""Export a trained semantic model to ONNX and / or TorchScript, then verify the files.

    python tools/export_model.py --config-file configs/shapes/unet_shapes.yaml \\
        --output exported --format onnx torchscript \\
        --opts MODEL.WEIGHTS output/unet_shapes/model_final.pth

Writes ``<output>/model.onnx`` and / or ``<output>/model.ts``: raw image (N, C, H, W)
float32 in INPUT.FORMAT order, 0..255 for 8-bit images -> logits (N, K, H, W), with the
normalisation and padding inside and dynamic N, H, W (seg_plugins/export.py). Each file is
then run (onnxruntime / torch.jit.load) beside the PyTorch model at every --verify-size;
the largest absolute difference is printed and the tool exits 1 if it exceeds --tolerance
(1e-4, float32). tools/predict.py --onnx runs an exported ONNX model on images.

Mask R-CNN (GeneralizedRCNN) goes through detectron2's TracingAdapter: its inference before
postprocessing, input the (C, H, W) float32 image already resized as INPUT.MIN_SIZE_TEST
says, outputs boxes, classes, 28x28 mask logits, scores and the image size
(seg_plugins/export.py; docs/export.md).

Without MODEL.WEIGHTS the model is exported with its initial weights (a warning says so).
Mistakes in the command end with one line on stderr and exit status 2.
"""

import argparse
import logging
import os
import sys
import time
import warnings
from types import SimpleNamespace

warnings.filterwarnings(
    "ignore", message="`torch.jit.script` is deprecated", category=FutureWarning
)

import seg_plugins  # noqa: F401  first: repairs detectron2 where needed, registers models

# isort: split
import torch
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from seg_plugins.engine.checkpoint import SafeCheckpointer
from seg_plugins.engine.cli import ConfigError, setup_cfg
from seg_plugins.export import (
    export_instance_model,
    export_onnx,
    export_torchscript,
    instance_max_abs_difference,
    max_abs_difference,
)
from seg_plugins.modeling.task import task_of

logger = logging.getLogger("seg_plugins.export")

EXPORTERS = {"onnx": ("model.onnx", export_onnx), "torchscript": ("model.ts", export_torchscript)}


def _size(text: str) -> tuple:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give HEIGHTxWIDTH, e.g. 512x512") from None
    if min(height, width) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive")
    return height, width


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--output", required=True, help="folder for model.onnx / model.ts")
    parser.add_argument(
        "--format", nargs="+", choices=sorted(EXPORTERS), default=["onnx", "torchscript"]
    )
    parser.add_argument(
        "--example-size", type=_size, default=(512, 512), metavar="HxW",
        help="size of the example image the export traces (any size runs afterwards)",
    )  # fmt: skip
    parser.add_argument(
        "--verify-size", type=_size, nargs="+", default=[(512, 512), (384, 640)],
        metavar="HxW", help="sizes the exported file is checked at (default 512x512 384x640)",
    )  # fmt: skip
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def build(cfg):
    try:
        task = task_of(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not task.exportable(cfg):
        raise ConfigError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} ({task.name} "
            "segmentation): this tool exports the semantic models and R-CNNs (Mask R-CNN, "
            "GeneralizedRCNN), not this one"
        )
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"  # exported and verified on the CPU
    cfg.freeze()
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        try:
            SafeCheckpointer.from_config(cfg, model).load(cfg.MODEL.WEIGHTS)
        except Exception as e:
            raise ConfigError(f"cannot load MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}: {e}") from e
    else:
        logger.warning("no MODEL.WEIGHTS: exporting the model's initial weights")
    return model


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="seg_plugins")
    try:
        cfg = setup_cfg(SimpleNamespace(config_file=args.config_file, opts=args.opts, num_gpus=1))
        model = build(cfg)
    except ConfigError as e:
        print(f"seg_plugins: error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.output, exist_ok=True)
    worst = 0.0
    instance = task_of(cfg).name == "instance"
    for fmt in args.format:
        name, export = EXPORTERS[fmt]
        path = os.path.join(args.output, name)
        tic = time.perf_counter()
        if instance:  # detectron2's TracingAdapter: inference before postprocessing
            export_instance_model(model, path, fmt, args.example_size)
        else:
            export(model, path, args.example_size)
        logger.info("%s: wrote %s in %.1f s", fmt, path, time.perf_counter() - tic)
        verify = instance_max_abs_difference if instance else max_abs_difference
        diffs = verify(path, model, args.verify_size)
        for (height, width), diff in diffs.items():
            ok = "ok" if diff <= args.tolerance else "TOO LARGE"
            print(f"{fmt}: {height}x{width} max |exported - PyTorch| = {diff:.2e} ({ok})")
        worst = max(worst, *diffs.values())
    if worst > args.tolerance:
        print(
            f"seg_plugins: error: exported outputs differ from PyTorch's by {worst:.2e} > "
            f"{args.tolerance:.0e}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    with torch.no_grad():
        sys.exit(main())
