"""``seg-plugins-train`` / ``tools/train_net.py``: train and evaluate from a yacs config.

The flags are detectron2's ``default_argument_parser``'s (same names, defaults and meaning;
tests/tools/test_cli.py compares them), plus ``--num-processes``, an alias of ``--num-gpus``
that reads better on the CPU, and the ``--opts`` alias of the trailing overrides.
"""

from __future__ import annotations

import argparse
from typing import List, Optional

from .common import ToolParser, add_config_arguments, parse

EXAMPLES = """\
examples:
  %(prog)s --config-file configs/shapes/unet_shapes.yaml
  %(prog)s --config-file shapes/unet_shapes.yaml          # a config shipped with the package
  %(prog)s --config-file X.yaml --eval-only MODEL.WEIGHTS model_final.pth
  %(prog)s --config-file X.yaml --resume                  # continue in OUTPUT_DIR
  %(prog)s --config-file X.yaml --num-gpus 8              # detectron2's launcher
  %(prog)s --config-file X.yaml SOLVER.MAX_ITER 100 OUTPUT_DIR out   # KEY VALUE overrides

Mistakes in the command (a missing config file, an unknown or mistyped key, an unregistered
dataset, impossible launch flags) end with one line on stderr and exit status 2, before any
process is started."""


def build_parser() -> ToolParser:
    parser = ToolParser(
        description="Train and evaluate a seg_plugins or detectron2 model from a yacs config.",
        epilog=EXAMPLES,
    )
    add_config_arguments(parser, required=False)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="resume from OUTPUT_DIR's last checkpoint (model, optimizer, scheduler, data "
        "order) if there is one; otherwise start from MODEL.WEIGHTS",
    )
    parser.add_argument(
        "--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS only; no training"
    )
    parser.add_argument(
        "--num-gpus",
        type=int,
        default=1,
        help="processes per machine: one per GPU, or N gloo processes on the CPU (1)",
    )
    parser.add_argument(
        "--num-processes",
        type=int,
        dest="num_gpus",
        default=argparse.SUPPRESS,
        help="the same as --num-gpus (clearer on the CPU)",
    )
    parser.add_argument("--num-machines", type=int, default=1, help="total machines (1)")
    parser.add_argument(
        "--machine-rank", type=int, default=0, help="the rank of this machine (unique, 0..)"
    )
    parser.add_argument(
        "--dist-url",
        default=None,
        help="torch.distributed init URL, e.g. tcp://host:port (several machines); default: "
        "detectron2's per-user local port",
    )
    return parser


def main(argv: Optional[List[str]] = None):
    """Parse, then run; returns the evaluation results (as detectron2's train_net does)."""
    args = parse(build_parser(), argv)
    from seg_plugins.engine.cli import run

    return run(args)


def console(argv: Optional[List[str]] = None) -> int:
    """The console script: exit status 0 (``main`` returns results, not a status)."""
    main(argv)
    return 0
