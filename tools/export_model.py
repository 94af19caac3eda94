#!/usr/bin/env python
"""``seg-plugins-export`` from a checkout: see ``--help`` (seg_plugins_cli/export.py)."""

import sys

from seg_plugins_cli.export import main

if __name__ == "__main__":
    sys.exit(main())
