#!/usr/bin/env python
"""Benchmark: Mask R-CNN and PanopticFPN (our semantic head as its semantic branch) trained

Runs tools/benchmarks/instance.py (its docstring says more; --help), as
`python -m tools.benchmarks.instance` does (tools/benchmarks/__init__.py says how
this script finds the package).
"""

import sys

if __package__:  # imported as tools.benchmark_instance (or run with python -m)
    from .benchmarks.instance import main
else:  # python tools/benchmark_instance.py: tools/ leads the import path
    from benchmarks.instance import main

if __name__ == "__main__":
    sys.exit(main())
