"""The benchmarks, one module each, and what they share (:mod:`.common`: the machine line,
medians of alternating timed runs, peak memory, FLOP counts, configs, child processes,
training runs and their metrics, Markdown tables).

Each module has ``main(argv=None) -> int`` (the exit status) and runs as
``python -m tools.benchmarks.<name>`` from the repository root. The documented commands,
``python tools/benchmark_<name>.py`` (``tools/benchmark.py`` for :mod:`.vs_pytorch`), are entry
scripts that only call that ``main``.

How an entry script finds this package, with no edit of the import path and nothing loaded by
file name: ``python tools/benchmark_x.py`` puts tools/, not the repository root, first on the
path, so there ``tools.benchmarks`` is not importable (``import tools`` would even find the
``tools`` package that detectron2's wheel installs). tools/ being first makes this folder
importable as ``benchmarks``, and the script imports ``benchmarks.x``. Imported as a module
(``tools.benchmark_x``, by a test or ``python -m``), the script imports ``.benchmarks.x``
relatively instead.

So one process may know the package as ``benchmarks`` (started by an entry script) or as
``tools.benchmarks`` (pytest, ``python -m``), and the same file could in principle be loaded
under both names. It never is: the modules import each other relatively only
(``from . import common``), never through an absolute name, so a process imports the package
under the one name it started with. That matters little anyway, as the modules keep no state
between calls (a class or a registry in two copies would). The child processes that measure
one point each (:mod:`.scaling`, :mod:`.inference_memory`) always run as
``python -m tools.benchmarks.<name>`` from the repository root (:func:`.common.run_child`),
whatever name their parent had.
"""
