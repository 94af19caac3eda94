#!/usr/bin/env python
"""Benchmark: DeepLab's dense CRF (MODEL.CRF) on a trained shapes model, with and without.

Runs tools/benchmarks/crf.py (its docstring says more; --help), as
`python -m tools.benchmarks.crf` does (tools/benchmarks/__init__.py says how
this script finds the package).
"""

import sys

if __package__:  # imported as tools.benchmark_crf (or run with python -m)
    from .benchmarks.crf import main
else:  # python tools/benchmark_crf.py: tools/ leads the import path
    from benchmarks.crf import main

if __name__ == "__main__":
    sys.exit(main())
