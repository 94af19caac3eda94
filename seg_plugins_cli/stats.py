"""``seg-plugins-stats`` / ``tools/dataset_stats.py``: what a registered dataset holds, and the
loss class weights it suggests."""

from __future__ import annotations

import argparse
from typing import List, Optional

from .common import ToolParser, add_config_arguments, dispatch, parse

# seg_plugins.data.statistics.CLASS_WEIGHT_METHODS (not imported: it loads torch)
METHODS = ("median_frequency", "inverse_log")

EPILOG = """\
examples:
  %(prog)s shapes_train
  %(prog)s cityscapes_fine_sem_seg_train --max-images 500 --method inverse_log \\
      --json output/cityscapes_stats.json
  %(prog)s my_data_train --config-file configs/my_data.yaml
  %(prog)s my_data_train --config-file configs/my_data.yaml MODEL.SEM_SEG_HEAD.IGNORE_VALUE 0

Semantic records (sem_seg_file_name): per class its pixels, share of the labelled pixels,
images holding it and the suggested weight; the ignored share, label values that are neither
a class nor the ignore label, image sizes; then a ready-to-paste
MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS line. --method median_frequency (default; Eigen & Fergus /
SegNet, on the frequency within the images that hold each class) or inverse_log (ENet, on
the plain pixel frequency); weights average 1 over the classes present, absent classes get
0. Instance records (annotations): instances and crowd regions per class, images without
annotations, mask / box area quartiles. A dataset with both (shapes) gets both.

Classes come from the dataset's metadata (stuff_classes, thing_classes, ignore_label); the
config (--config-file and / or KEY VALUE overrides) also registers its DATASETS.SPECS and
supplies MODEL.SEM_SEG_HEAD.NUM_CLASSES / IGNORE_VALUE when the metadata has none. --json
writes everything to a file (atomically). Mistakes in the command end with one line on
stderr and exit status 2."""


def build_parser() -> ToolParser:
    parser = ToolParser(
        description="Print what a registered dataset holds, and the loss class weights it "
        "suggests.",
        epilog=EPILOG,
    )
    parser.add_argument("dataset", metavar="NAME", help="a registered dataset (DatasetCatalog)")
    add_config_arguments(parser, required=False)
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="median_frequency",
        help="how the class weights are computed from the frequencies (median_frequency)",
    )
    parser.add_argument(
        "--max-images",
        type=int,
        metavar="N",
        help="read at most N images, spread evenly over the dataset (default: all)",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="also write the statistics to this file (JSON)"
    )
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parse(parser, argv)
    if args.max_images is not None and args.max_images < 1:
        parser.error(f"--max-images must be >= 1, got {args.max_images}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return dispatch("stats", args)
