"""``seg-plugins-visualize`` / ``tools/visualize_data.py``: look at a dataset as annotated, or
as the training loader hands it to the model."""

from __future__ import annotations

import argparse
from typing import List, Optional

from .common import ToolParser, add_config_arguments, add_output_argument, dispatch, parse

SOURCES = ("annotation", "dataloader")

EPILOG = """\
examples:
  %(prog)s --config-file configs/shapes/unet_shapes.yaml --source annotation \\
      -o vis/shapes_annotation
  %(prog)s --config-file configs/shapes/unet_shapes.yaml --source dataloader \\
      -o vis/shapes_loader --num-images 16
  %(prog)s --config-file configs/medical/unet_S5_medical_binary_40k.yaml \\
      --source dataloader -o vis/medical DATALOADER.NUM_WORKERS 0

--source annotation: the first --num-images records of --dataset (default the config's
DATASETS.TRAIN[0]) as stored: the image (seg_plugins.data.read_image; > 8-bit images
stretched from their 1st to 99th percentile), the label map of a semantic record
(sem_seg_file_name, read raw with seg_plugins.data.read_label, then the record's
sem_seg_label_transform), the instances of a record with annotations (detectron2's
Visualizer.draw_dataset_dict). shapes has both, so both are drawn.

--source dataloader: the first images of Trainer.build_train_loader(cfg) (the config's
DATASETS.TRAIN, or --dataset), i.e. after the mapper: read in INPUT.FORMAT,
intensity-normalised, resized, cropped, flipped. Its image (C, H, W) is shown in RGB: 1 or
N != 3 channels as the grey first channel; uint8 as is; float values within 0..255 as they
are, others (raw 16-bit, z-scored) stretched from their 1st to 99th percentile. Its sem_seg
(H, W) or instances (boxes, masks) are drawn over it.

Each PNG, <output>/<index>_<stem>.png (<index>_<stem>_loader.png from the loader, so both
sources can share a folder), shows the panels side by side (image | semantic labels |
instances, those the sample has), a title (file, size, loader batch) and a legend of the
classes shown. Colours: the dataset's stuff_colors / thing_colors, else the fixed palette of
the evaluation's PNGs; pixels with the ignore label white ("ignore"), label values that are
neither a class nor the ignore label magenta ("out of range": a dataset bug). --scale sets
the panels' scale (default: the longer side about 384 pixels). KEY VALUE pairs at the end
override the config, as in tools/train_net.py. A progress bar runs on stderr; per-image
lines are logged at debug level. Command mistakes end with one line on stderr and exit
status 2; an unreadable file with status 1."""


def build_parser() -> ToolParser:
    parser = ToolParser(
        description="Look at a dataset as annotated, or as the training loader hands it to "
        "the model.",
        epilog=EPILOG,
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--source",
        required=True,
        choices=SOURCES,
        help="annotation: the records as stored; dataloader: the training loader's output",
    )
    add_output_argument(parser, "folder for the PNGs (created)")
    parser.add_argument(
        "--num-images", type=int, default=8, metavar="N", help="how many images (8)"
    )
    parser.add_argument(
        "--dataset",
        metavar="NAME",
        help="a registered dataset (default: the config's DATASETS.TRAIN[0]); with --source "
        "dataloader it replaces DATASETS.TRAIN",
    )
    parser.add_argument(
        "--scale", type=float, help="panel scale (default: longer side about 384 pixels)"
    )
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parse(parser, argv)
    if args.num_images < 1:
        parser.error(f"--num-images must be >= 1, got {args.num_images}")
    if args.scale is not None and args.scale <= 0:
        parser.error(f"--scale must be > 0, got {args.scale}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return dispatch("visualize", args)
