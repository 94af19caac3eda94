"""Suite-wide settings.

- Property-based tests are derandomized, with no example database (tests/hypothesis_policy.py):
  a run's result does not depend on luck or on what an earlier run found (CI runs the suite
  on two detectron2 builds; both must see the same examples). A test that opts out fails.
- The report header says which detectron2 this run tests (the CI runs the suite once on the
  PyPI v0.6 fallback and once on official main built from source).
- The session leaves the working tree as it found it (tests/tree_check.py): a test that
  writes into the repository fails the run, naming the paths. Skip the check with
  ``-p no:tests.tree_check`` on a checkout that is being edited during the run.
"""

import os

import pytest

from tests import hypothesis_policy

pytest_plugins = ("tests.tree_check",)

hypothesis_policy.load()


def pytest_runtest_setup(item):
    function = getattr(item, "obj", None)
    if hypothesis_policy.PROFILE == "ci" and hypothesis_policy.randomized_property_test(function):
        pytest.fail(
            f"{item.nodeid} is a randomized property test: CI runs derandomized ones only. "
            "Give it @settings(derandomize=True, max_examples=N) (or @seed), and hunt with "
            "SEG_PLUGINS_HYPOTHESIS_PROFILE=hunt outside CI (tests/hypothesis_policy.py)",
            pytrace=False,
        )


def pytest_report_header(config):
    import seg_plugins  # noqa: F401  (first: applies the compat repairs)

    # isort: split
    import detectron2
    import torch

    from seg_plugins import compat

    source = compat.installed_from() or "not recorded (not built by tools/setup_env.sh)"
    return [
        f"detectron2 {detectron2.__version__} at {os.path.dirname(detectron2.__file__)}; "
        f"compiled ops: {'yes' if compat.has_compiled_ops() else 'no'}; torch {torch.__version__}",
        f"detectron2 installed from: {source}",
    ]
