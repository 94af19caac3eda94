"""``seg-plugins-plot-metrics``: training curves (losses, learning rate, evaluation) from
detectron2's metrics.json as one PNG (the command line is parsed by
:mod:`seg_plugins_cli.plot_metrics`, whose ``--help`` documents the panels).
"""

import os

from seg_plugins_cli.common import fail

from ..evaluation.curves import plot_training_curves


def run(args) -> int:
    """Plot as ``args`` (:func:`seg_plugins_cli.plot_metrics.parse_args`) say; exit status."""
    output = args.output or os.path.join(os.path.dirname(args.metrics_json), "curves.png")
    try:
        plot_training_curves(args.metrics_json, output)
    except (OSError, ValueError) as e:
        return fail(str(e))
    print(f"wrote {output}")
    return 0
