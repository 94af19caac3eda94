#!/usr/bin/env python
"""Benchmark: peak memory and wall time of whole-image vs sliding-window inference.

Runs tools/benchmarks/inference_memory.py (its docstring says more; --help), as
`python -m tools.benchmarks.inference_memory` does (tools/benchmarks/__init__.py says how
this script finds the package).
"""

import sys

if __package__:  # imported as tools.benchmark_inference_memory (or run with python -m)
    from .benchmarks.inference_memory import main
else:  # python tools/benchmark_inference_memory.py: tools/ leads the import path
    from benchmarks.inference_memory import main

if __name__ == "__main__":
    sys.exit(main())
