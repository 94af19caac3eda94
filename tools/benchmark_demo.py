#!/usr/bin/env python
"""Benchmark of the README's first command (`make demo`), set-up already done.

Runs tools/benchmarks/demo.py (its docstring says more; --help), as
`python -m tools.benchmarks.demo` does (tools/benchmarks/__init__.py says how
this script finds the package).
"""

import sys

if __package__:  # imported as tools.benchmark_demo (or run with python -m)
    from .benchmarks.demo import main
else:  # python tools/benchmark_demo.py: tools/ leads the import path
    from benchmarks.demo import main

if __name__ == "__main__":
    sys.exit(main())
