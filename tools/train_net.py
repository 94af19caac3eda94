#!/usr/bin/env python
"""``seg-plugins-train`` from a checkout: see ``--help`` (seg_plugins_cli/train.py)."""

from seg_plugins_cli.train import main

if __name__ == "__main__":
    main()
