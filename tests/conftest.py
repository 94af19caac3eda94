"""Suite-wide: the report header says which detectron2 this run tests (the CI runs the suite
once on the PyPI v0.6 fallback and once on official main built from source)."""

import os
import sys


def pytest_report_header(config):
    import seg_plugins  # noqa: F401  (first: applies the compat repairs)

    # isort: split
    import detectron2
    import torch

    from seg_plugins import compat

    record = os.path.join(sys.prefix, ".detectron2_source")
    source = open(record).read().strip() if os.path.isfile(record) else "not recorded"
    return [
        f"detectron2 {detectron2.__version__} at {os.path.dirname(detectron2.__file__)}; "
        f"compiled ops: {'yes' if compat.has_compiled_ops() else 'no'}; torch {torch.__version__}",
        f"detectron2 installed from: {source}",
    ]
