#!/usr/bin/env python
"""``seg-plugins-plot-metrics`` from a checkout: see ``--help``
(seg_plugins_cli/plot_metrics.py)."""

import sys

from seg_plugins_cli.plot_metrics import main

if __name__ == "__main__":
    sys.exit(main())
