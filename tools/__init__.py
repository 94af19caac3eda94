"""The command-line tools, a package so that tests and benchmarks import them by name
(``from tools import predict``, ``from tools.benchmarks import loader``) from the repository
root; each is still run as a script, ``python tools/<name>.py``.

detectron2's wheel installs a top-level package of the same name (its own tools/); this one
is found first only where the repository root leads the import path: pytest (pytest.ini's
``pythonpath = .``) and ``python -m tools.<...>`` run from the repository root.
"""
