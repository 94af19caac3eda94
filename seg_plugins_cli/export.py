"""``seg-plugins-export`` / ``tools/export_model.py``: a trained model to ONNX / TorchScript,
verified against PyTorch."""

from __future__ import annotations

import argparse
from typing import List, Optional

from .common import (
    ToolParser,
    add_config_arguments,
    add_output_argument,
    add_weights_argument,
    dispatch,
    parse,
    require_weights_or_config,
)

FORMATS = ("onnx", "torchscript")

EPILOG = """\
examples:
  %(prog)s --weights output/unet_shapes/model_final.pth -o exported
  %(prog)s --config-file configs/shapes/unet_shapes.yaml -o exported --format onnx \\
      MODEL.WEIGHTS output/unet_shapes/model_final.pth
  %(prog)s --config-file X.yaml -o exported --random-weights   # an untrained model, on purpose

Writes <output>/model.onnx and / or <output>/model.ts: raw image (N, C, H, W) float32 in
INPUT.FORMAT order, 0..255 for 8-bit images -> logits (N, K, H, W), with the normalisation
and padding inside and dynamic N, H, W (docs/export.md). Each file is then run (onnxruntime /
torch.jit.load) beside the PyTorch model at every --verify-size; the largest absolute
difference is printed and the tool exits 1 if it exceeds --tolerance. Mask R-CNN goes through
detectron2's TracingAdapter (its inference before postprocessing; docs/export.md).

A checkpoint written by seg_plugins' Trainer carries its config, so --weights alone is
enough. Without weights the tool refuses to export (an untrained model is rarely what is
wanted) unless --random-weights says so. Mistakes in the command end with one line on stderr
and exit status 2."""


def size(text: str) -> tuple:
    """``HEIGHTxWIDTH`` -> (height, width)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give HEIGHTxWIDTH, e.g. 512x512") from None
    if min(height, width) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive")
    return height, width


def build_parser() -> ToolParser:
    parser = ToolParser(
        description="Export a trained model to ONNX and / or TorchScript, then verify the files.",
        epilog=EPILOG,
    )
    add_config_arguments(parser, required=False)
    add_weights_argument(parser)
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="export the model's initial (untrained) weights when no weights are given",
    )
    add_output_argument(parser, "folder for model.onnx / model.ts (created)")
    parser.add_argument(
        "--format",
        nargs="+",
        choices=FORMATS,
        default=list(FORMATS),
        help="what to write (default: both)",
    )
    parser.add_argument(
        "--example-size",
        type=size,
        default=(512, 512),
        metavar="HxW",
        help="size of the example image the export traces; any size runs afterwards (512x512)",
    )
    parser.add_argument(
        "--verify-size",
        type=size,
        nargs="+",
        default=[(512, 512), (384, 640)],
        metavar="HxW",
        help="sizes the exported file is checked at (512x512 384x640)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest |exported - PyTorch| accepted, else exit status 1 (1e-4, float32)",
    )
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parse(parser, argv)
    require_weights_or_config(parser, args)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return dispatch("export", args)
