"""Suite-wide settings.

- Property-based tests are derandomized, with no example database, by default: a run's
  result does not depend on luck or on what an earlier run found (CI runs the suite on two
  detectron2 builds; both must see the same examples). Each test still sets its own
  example count. ``SEG_PLUGINS_HYPOTHESIS_PROFILE=hunt`` gives randomized search, for hunting
  outside CI (what it finds becomes a fixed regression test).
- The report header says which detectron2 this run tests (the CI runs the suite once on the
  PyPI v0.6 fallback and once on official main built from source).
"""

import os
import sys

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("hunt", derandomize=False, database=None, print_blob=True)
settings.load_profile(os.environ.get("SEG_PLUGINS_HYPOTHESIS_PROFILE", "ci"))


def pytest_report_header(config):
    import seg_plugins  # noqa: F401  (first: applies the compat repairs)

    # isort: split
    import detectron2
    import torch

    from seg_plugins import compat

    record = os.path.join(sys.prefix, ".detectron2_source")
    source = "not recorded (not built by tools/setup_env.sh)"
    if os.path.isfile(record):
        with open(record) as f:
            source = f.read().strip()
    return [
        f"detectron2 {detectron2.__version__} at {os.path.dirname(detectron2.__file__)}; "
        f"compiled ops: {'yes' if compat.has_compiled_ops() else 'no'}; torch {torch.__version__}",
        f"detectron2 installed from: {source}",
    ]
