"""The session check of tests/tree_check.py: what it records and compares, and a session that
writes into its rootdir ends red, naming the path, while a tree dirty before it stays fine."""

import os
import subprocess
import sys

from tests import tree_check

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_added_removed_and_changed_paths_are_listed_and_caches_left_out(tmp_path):
    for rel in ("same.txt", "edited.txt", "gone/old.txt", "__pycache__/a.pyc", ".venv/lib/a"):
        _write(tmp_path / rel)
    before = tree_check.snapshot(tmp_path)
    assert set(before) == {"same.txt", "edited.txt", "gone/", "gone/old.txt"}

    _write(tmp_path / "edited.txt", "longer")
    os.remove(tmp_path / "gone" / "old.txt")
    os.rmdir(tmp_path / "gone")
    _write(tmp_path / "output" / "run" / "report.json")
    (tmp_path / "empty").mkdir()
    os.symlink("same.txt", tmp_path / "link")
    for rel in ("__pycache__/b.pyc", ".venv-d2main/x", ".pytest_cache/v", "pkg.egg-info/PKG"):
        _write(tmp_path / rel)
    (tmp_path / ".hypothesis").mkdir()

    assert tree_check.changes(before, tree_check.snapshot(tmp_path)) == [
        "changed: edited.txt",
        "added: empty/",
        "removed: gone/",
        "removed: gone/old.txt",
        "added: link",
        "added: output/",
        "added: output/run/",
        "added: output/run/report.json",
    ]


def test_same_size_rewrite_is_a_change(tmp_path):
    _write(tmp_path / "a.txt", "abc")
    before = tree_check.snapshot(tmp_path)
    os.utime(tmp_path / "a.txt", ns=(0, before["a.txt"][2] + 10**9))  # rewritten a second later
    assert tree_check.changes(before, tree_check.snapshot(tmp_path)) == ["changed: a.txt"]


def test_report_lists_at_most_max_listed_paths():
    found = [f"added: f{i}" for i in range(tree_check.MAX_LISTED + 3)]
    text = tree_check.report(found)
    assert "tmp_path" in text and "  added: f0" in text and "  ... 3 more" in text
    assert f"added: f{tree_check.MAX_LISTED}" not in text


def _session(root, test_body: str) -> subprocess.CompletedProcess:
    """A pytest session in ``root`` (its rootdir) with this plugin and one test."""
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "conftest.py").write_text('pytest_plugins = ("tests.tree_check",)\n')
    (root / "test_one.py").write_text(f"def test_one(request):\n    {test_body}\n")
    (root / "dirty_before.txt").write_text("an untracked file that was there first")
    env = {**os.environ, "PYTHONPATH": REPO}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root)]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_a_session_that_writes_into_its_rootdir_fails(tmp_path):
    body = '(request.config.rootpath / "written.txt").write_text("x")'
    r = _session(tmp_path, body)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 passed, 1 error" in r.stdout and "added: written.txt" in r.stdout
    assert "dirty_before.txt" not in r.stdout


def test_a_session_that_writes_under_tmp_path_passes(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    r = _session(root, "assert True")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
