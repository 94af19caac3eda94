#!/usr/bin/env python
"""Benchmark: does the training data loader keep up with the training step?

Runs tools/benchmarks/loader.py (its docstring says more; --help), as
`python -m tools.benchmarks.loader` does (tools/benchmarks/__init__.py says how
this script finds the package).
"""

import sys

if __package__:  # imported as tools.benchmark_loader (or run with python -m)
    from .benchmarks.loader import main
else:  # python tools/benchmark_loader.py: tools/ leads the import path
    from benchmarks.loader import main

if __name__ == "__main__":
    sys.exit(main())
