#!/usr/bin/env python
"""``seg-plugins-visualize`` from a checkout: see ``--help`` (seg_plugins_cli/visualize.py)."""

import sys

from seg_plugins_cli.visualize import main

if __name__ == "__main__":
    sys.exit(main())
