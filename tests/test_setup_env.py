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
    assert source.startswith(("(a)", "(b)", "(c)", "(d)"))
    assert "pip" not in r.stderr  # nothing was installed


@pytest.mark.skipif(
    not os.path.isfile(STAMP), reason="this Python's venv was not built by tools/setup_env.sh"
)
def test_recorded_source_matches_the_detectron2_in_use():
    """A venv built from source (SEG_PLUGINS_D2_SOURCE or git) has the compiled ops; the
    PyPI fallback has none. The CI leg on official main relies on this record."""
    from seg_plugins import compat

    source = compat.installed_from()
    if source.startswith(("(b)", "(c)")):
        assert compat.has_compiled_ops(), source
    elif source.startswith("(d)"):
        assert not compat.has_compiled_ops(), source


def _setup_with_source(tmp_path, source):
    venv = tmp_path / "venv"
    r = subprocess.run(
        ["bash", os.path.join(REPO, "tools", "setup_env.sh")],
        env=dict(os.environ, SEG_PLUGINS_VENV=str(venv), SEG_PLUGINS_D2_SOURCE=str(source)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert not venv.exists()  # refused before anything was built
    return r


@pytest.mark.parametrize("case", ["missing", "empty_dir", "not_gzip", "tar_without_csrc"])
def test_a_wrong_detectron2_source_is_refused_at_once(tmp_path, case):
    import tarfile

    source = tmp_path / "src"
    if case == "empty_dir":
        source.mkdir()
    elif case == "not_gzip":
        source.write_text("not an archive")
    elif case == "tar_without_csrc":
        tree = tmp_path / "detectron2-x" / "detectron2"
        tree.mkdir(parents=True)
        (tree.parent / "setup.py").write_text("")
        (tree / "__init__.py").write_text("")
        source = tmp_path / "d2.tar.gz"
        with tarfile.open(source, "w:gz") as tar:
            tar.add(tree.parent, arcname="detectron2-x")
    r = _setup_with_source(tmp_path, source)
    assert r.returncode == 1, r.stderr
    expected = {
        "missing": "does not exist",
        "empty_dir": "without setup.py and detectron2/layers/csrc",
        "not_gzip": "not a readable .tar.gz",
        "tar_without_csrc": "holds no detectron2/layers/csrc",
    }[case]
    assert f"SEG_PLUGINS_D2_SOURCE={source}" in r.stderr and expected in r.stderr, r.stderr
    assert "a detectron2 checkout" in r.stderr  # the fix
