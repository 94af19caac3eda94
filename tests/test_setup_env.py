"""tools/setup_env.sh on an environment it already built: idempotent and fast."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAMP = os.path.join(sys.prefix, ".seg_plugins_setup_stamp")


@pytest.mark.skipif(
    not os.path.isfile(STAMP), reason="this Python's venv was not built by tools/setup_env.sh"
)
def test_second_run_is_a_no_op():
    r = subprocess.run(
        ["bash", os.path.join(REPO, "tools", "setup_env.sh")],
        env=dict(os.environ, SEG_PLUGINS_VENV=sys.prefix),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "environment up to date" in r.stderr
    with open(os.path.join(sys.prefix, ".detectron2_source")) as f:
        source = f.read()
    assert source.startswith(("(a)", "(b)", "(c)"))
    assert "pip" not in r.stderr  # nothing was installed
