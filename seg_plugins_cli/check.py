"""``seg-plugins-check`` / ``tools/check_dataset.py``: check registered datasets file by file,
before training on them."""

from __future__ import annotations

import argparse
import os
from typing import List, Optional

from .common import ToolParser, add_config_arguments, dispatch, parse

LEVELS = ("light", "full")  # seg_plugins.data.validation.check_dataset_records

EPILOG = """\
examples:
  %(prog)s shapes_val
  %(prog)s polyps_train polyps_val --spec datasets/polyps.yaml
  %(prog)s cityscapes_fine_sem_seg_val --config-file configs/cityscapes/X.yaml
  %(prog)s my_data_val --config-file configs/my_data.yaml INPUT.FORMAT L
  %(prog)s NAME --level light --workers 2 --json problems.json

Level "full" (default) decodes every image and label map: missing files, unreadable or
truncated images, image/label size mismatches, colour / RGBA label maps, label values that
are neither a class nor the ignore value, for instance datasets empty or degenerate
polygons, empty boxes, unknown categories and RLE of the wrong size, and for panoptic
datasets PNGs that are not RGB or not of the image's size, segment ids 0 / out of range /
listed twice, unknown segment categories, and segments listed but not in the PNG (or the
reverse). Level "light" reads the file headers and the segment lists only (what every
loader checks when DATASETS.CHECK is "light"). Annotation
files that do not follow their format (COCO JSON schema errors, ...) are reported when the
dataset is loaded. Every problem names the file and the fix; the config (--config-file and
the overrides) gives INPUT.FORMAT and registers its DATASETS.SPECS.

Exit status: 0 no errors (warnings may be printed), 1 errors found, 2 a usage mistake (an
unknown dataset, a missing config file), reported in one line on stderr."""


def build_parser() -> ToolParser:
    parser = ToolParser(
        description="Check registered datasets file by file: every problem named, with its fix.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "names", nargs="+", metavar="NAME", help="registered datasets (DatasetCatalog) to check"
    )
    add_config_arguments(parser, required=False)
    parser.add_argument(
        "--spec",
        action="append",
        default=[],
        metavar="FILE",
        help="dataset spec file (YAML / JSON) to register first; may be repeated",
    )
    parser.add_argument(
        "--level",
        choices=LEVELS,
        default="full",
        help='"full" decodes every image and label map; "light" reads the headers (default: full)',
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        metavar="N",
        help="processes checking the records in parallel (min(4, CPUs))",
    )
    parser.add_argument(
        "--max-lines",
        type=int,
        default=50,
        metavar="N",
        help="problems printed per dataset; --json has them all (50)",
    )
    parser.add_argument(
        "--json",
        default="",
        metavar="FILE",
        help="also write the full report (every problem of every dataset) to this file",
    )
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return parse(build_parser(), argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return dispatch("check", args)
