#!/usr/bin/env python
"""``seg-plugins-stats`` from a checkout: see ``--help`` (seg_plugins_cli/stats.py)."""

import sys

from seg_plugins_cli.stats import main

if __name__ == "__main__":
    sys.exit(main())
