#!/usr/bin/env python
"""Benchmark: seg_plugins through detectron2 vs plain PyTorch / torchvision, in one table.

Runs tools/benchmarks/vs_pytorch.py (its docstring says more; --help), as
`python -m tools.benchmarks.vs_pytorch` does (tools/benchmarks/__init__.py says how
this script finds the package).
"""

import sys

if __package__:  # imported as tools.benchmark (or run with python -m)
    from .benchmarks.vs_pytorch import main
else:  # python tools/benchmark.py: tools/ leads the import path
    from benchmarks.vs_pytorch import main

if __name__ == "__main__":
    sys.exit(main())
