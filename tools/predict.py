#!/usr/bin/env python
"""``seg-plugins-predict`` from a checkout: see ``--help`` (seg_plugins_cli/predict.py)."""

import sys

from seg_plugins_cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
