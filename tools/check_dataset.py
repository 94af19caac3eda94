#!/usr/bin/env python
"""``seg-plugins-check`` from a checkout: see ``--help`` (seg_plugins_cli/check.py)."""

import sys

from seg_plugins_cli.check import main

if __name__ == "__main__":
    sys.exit(main())
