#!/usr/bin/env python
"""Benchmark: every semantic model trained from scratch on `shapes` with its CPU config.

Runs tools/benchmarks/models.py (its docstring says more; --help), as
`python -m tools.benchmarks.models` does (tools/benchmarks/__init__.py says how
this script finds the package).
"""

import sys

if __package__:  # imported as tools.benchmark_models (or run with python -m)
    from .benchmarks.models import main
else:  # python tools/benchmark_models.py: tools/ leads the import path
    from benchmarks.models import main

if __name__ == "__main__":
    sys.exit(main())
