#!/usr/bin/env python
"""Benchmark: inference latency of PyTorch eager vs TorchScript vs ONNX Runtime (CPU).

Runs tools/benchmarks/export.py (its docstring says more; --help), as
`python -m tools.benchmarks.export` does (tools/benchmarks/__init__.py says how
this script finds the package).
"""

import sys

if __package__:  # imported as tools.benchmark_export (or run with python -m)
    from .benchmarks.export import main
else:  # python tools/benchmark_export.py: tools/ leads the import path
    from benchmarks.export import main

if __name__ == "__main__":
    sys.exit(main())
