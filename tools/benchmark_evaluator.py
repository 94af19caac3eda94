#!/usr/bin/env python
"""Benchmark: SemSegMetricsEvaluator vs detectron2's SemSegEvaluator, side by side.

Runs tools/benchmarks/evaluator.py (its docstring says more; --help), as
`python -m tools.benchmarks.evaluator` does (tools/benchmarks/__init__.py says how
this script finds the package).
"""

import sys

if __package__:  # imported as tools.benchmark_evaluator (or run with python -m)
    from .benchmarks.evaluator import main
else:  # python tools/benchmark_evaluator.py: tools/ leads the import path
    from benchmarks.evaluator import main

if __name__ == "__main__":
    sys.exit(main())
