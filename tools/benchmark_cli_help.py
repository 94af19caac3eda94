#!/usr/bin/env python
"""Benchmark: how long each command-line tool takes to answer --help.

Runs tools/benchmarks/cli_help.py (its docstring says more; --help), as
`python -m tools.benchmarks.cli_help` does (tools/benchmarks/__init__.py says how
this script finds the package).
"""

import sys

if __package__:  # imported as tools.benchmark_cli_help (or run with python -m)
    from .benchmarks.cli_help import main
else:  # python tools/benchmark_cli_help.py: tools/ leads the import path
    from benchmarks.cli_help import main

if __name__ == "__main__":
    sys.exit(main())
