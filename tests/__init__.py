"""The test suite, a package: helpers shared between test files are imported by their full
name (``from tests.modeling.seg_model_checks import tiny_model_cfg``), and so are the tools
(``from tools import predict``). pytest.ini's ``pythonpath = .`` puts the repository root
first on the import path of the test process; the worker processes that multiprocessing
spawns from it inherit that path, while a plain subprocess that imports these modules needs
the root as its working directory or on PYTHONPATH."""
