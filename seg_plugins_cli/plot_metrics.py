"""``seg-plugins-plot-metrics`` / ``tools/plot_metrics.py``: training curves from detectron2's
metrics.json."""

from __future__ import annotations

import argparse
from typing import List, Optional

from .common import ToolParser, add_output_argument, dispatch, parse

EPILOG = """\
examples:
  %(prog)s output/unet_shapes/metrics.json            # -> output/unet_shapes/curves.png
  %(prog)s output/unet_shapes/metrics.json -o /tmp/unet_curves.png

One PNG with stacked panels against iteration: total_loss and every loss_* (log scale when
they span more than 20x), lr, and the evaluation results that are present (sem_seg/mIoU,
sem_seg/mDice, segm/AP, bbox/AP). A missing, empty or malformed file ends with one line on
stderr and exit status 2."""


def build_parser() -> ToolParser:
    parser = ToolParser(
        description="Plot training curves from detectron2's metrics.json: loss, learning "
        "rate, evaluation.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "metrics_json", metavar="METRICS.json", help="OUTPUT_DIR/metrics.json of a training run"
    )
    add_output_argument(
        parser, "PNG to write (default: curves.png beside metrics.json)", required=False
    )
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return parse(build_parser(), argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return dispatch("plot_metrics", args)
