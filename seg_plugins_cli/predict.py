"""``seg-plugins-predict`` / ``tools/predict.py``: segment images with a trained model."""

from __future__ import annotations

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

EPILOG = """\
examples:
  %(prog)s --weights output/unet_shapes/model_final.pth --input datasets/shapes/val/images -o preds
  %(prog)s --config-file configs/shapes/unet_shapes.yaml --input a.png 'scans/**/*.tif' \\
      -o out --probabilities MODEL.WEIGHTS model.pth MODEL.DEVICE cuda
  %(prog)s --config-file X.yaml --input imgs -o out --onnx exported/model.onnx

--input takes image files, folders (their image files, not recursive) and quoted glob
patterns (** recurses), in any mix. Each image is read as the Trainer's test loader reads it
(INPUT.FORMAT, INPUT.INTENSITY_NORM) and predicted at its original size with the config's
inference mode (TEST.SEM_SEG: whole, sliding windows, TTA). For an image <stem>.<ext> it
writes, into --output:

  <stem>.png          the class of every pixel: a palette PNG whose pixel values are the class
                      indices (seg_plugins.data.io.read_label reads it back) and whose colours
                      are the dataset's stuff_colors (DATASETS.TEST[0]) or a fixed palette;
                      16-bit grayscale beyond 256 classes
  <stem>_overlay.png  the prediction drawn on the image by detectron2's Visualizer (class
                      colours + names); images under 384 pixels are enlarged (at most 4x)
  <stem>_prob.npy     with --probabilities: float16 (K, H, W) softmax probabilities; binary
                      models (NUM_CLASSES 1): (1, H, W), the foreground probability

Panoptic FPN writes, instead, the COCO panoptic format: <stem>_panoptic.png (segment ids,
id = R + 256 G + 256^2 B, 0 VOID), <stem>_overlay.png (detectron2's draw_panoptic_seg), and
panoptic.json with every image's segments_info in the dataset's category ids (the metadata of
DATASETS.TEST[0]) and the categories.

A checkpoint written by seg_plugins' Trainer carries its config, so --weights alone is
enough; with --config-file too, the file wins (the keys that differ are logged). Binary
models are thresholded at MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD, as in evaluation.
MODEL.DEVICE "cuda" falls back to the CPU (with a log line) when CUDA is absent. A progress
bar runs on stderr; per-image lines are logged at debug level. Command mistakes (config,
overrides, inputs, weights) end with one line on stderr and exit status 2; an image that
cannot be read or predicted ends the run with status 1."""


def build_parser() -> ToolParser:
    parser = ToolParser(
        description="Segment images with a trained model: label PNGs, overlays, probabilities.",
        epilog=EPILOG,
    )
    add_config_arguments(parser, required=False)
    add_weights_argument(parser)
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        help="image files, folders and/or quoted glob patterns ('imgs/*.png', 'a/**/*.tif')",
    )
    add_output_argument(parser, "folder for the outputs (created)")
    parser.add_argument(
        "--probabilities",
        action="store_true",
        help="also write <stem>_prob.npy: float16 (K, H, W) class probabilities",
    )
    parser.add_argument(
        "--onnx",
        metavar="MODEL.onnx",
        help="run this exported model (seg-plugins-export) with onnxruntime instead of "
        "PyTorch; the config still gives INPUT.FORMAT, the classes and their colours",
    )
    return parser


def parse_args(argv: Optional[List[str]] = None):
    parser = build_parser()
    args = parse(parser, argv)
    require_weights_or_config(parser, args)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return dispatch("predict", args)
