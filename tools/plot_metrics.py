#!/usr/bin/env python
"""Plot training curves from detectron2's metrics.json: loss, learning rate, evaluation.

    python tools/plot_metrics.py output/unet_shapes/metrics.json            # -> .../curves.png
    python tools/plot_metrics.py output/unet_shapes/metrics.json -o /tmp/unet_curves.png

One PNG with stacked panels against iteration: total_loss and every loss_* (log scale when
they span more than 20x), lr, and the evaluation results that are present (sem_seg/mIoU,
sem_seg/mDice, segm/AP, bbox/AP). A missing, empty or malformed file ends with one line on
stderr and exit status 2.
"""

import argparse
import os
import sys
import warnings

# detectron2 v0.6 scripts a few helpers with torch.jit.script, deprecated in torch 2.x.
warnings.filterwarnings(
    "ignore", message="`torch.jit.script` is deprecated", category=FutureWarning
)

import seg_plugins  # noqa: F401  first: repairs detectron2 where needed

# isort: split
from seg_plugins.evaluation.curves import plot_training_curves


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics_json", help="OUTPUT_DIR/metrics.json of a training run")
    parser.add_argument(
        "-o", "--output", help="PNG to write (default: curves.png beside metrics.json)"
    )
    args = parser.parse_args(argv)
    output = args.output or os.path.join(os.path.dirname(args.metrics_json), "curves.png")
    try:
        plot_training_curves(args.metrics_json, output)
    except (OSError, ValueError) as e:
        print(f"plot_metrics: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
