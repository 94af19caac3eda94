#!/usr/bin/env python
"""Scaling of our training step: time and peak memory as the image and the batch grow,

Runs tools/benchmarks/scaling.py (its docstring says more; --help), as
`python -m tools.benchmarks.scaling` does (tools/benchmarks/__init__.py says how
this script finds the package).
"""

import sys

if __package__:  # imported as tools.benchmark_scaling (or run with python -m)
    from .benchmarks.scaling import main
else:  # python tools/benchmark_scaling.py: tools/ leads the import path
    from benchmarks.scaling import main

if __name__ == "__main__":
    sys.exit(main())
