"""A test session leaves the working tree as it found it (house style 18: whatever a test
writes goes under ``tmp_path``). A pytest plugin; tests/conftest.py loads it.

When the session starts it records every file and folder under pytest's rootdir (the
repository), each file with its size and modification time; when the last test is done it
records them again, and if anything was added, removed or changed, the teardown of that
last test fails, listing the paths: the run ends red. A tree that was already dirty before
the session is fine; only the difference counts. Left out, as anything may write there:
``.git``, the virtual environments (``.venv*``) and caches (``__pycache__``,
``.pytest_cache``, ``.hypothesis``, ``.ruff_cache``, ``.mypy_cache``, ``*.egg-info``).

On a checkout that someone edits while the tests run, their edits are reported too: run with
``-p no:tests.tree_check`` there.
"""

import os
import stat
from typing import Dict, List, Tuple

import pytest

SKIPPED_NAMES = frozenset(
    {".git", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", ".mypy_cache"}
)
MAX_LISTED = 50

Entry = Tuple  # ("dir",) | ("link", target) | ("file", size, mtime_ns)
_BEFORE = pytest.StashKey[Dict[str, Entry]]()


def skipped(name: str) -> bool:
    """Whether a file or folder of this name is left out of the check (with its contents)."""
    return name in SKIPPED_NAMES or name.startswith(".venv") or name.endswith(".egg-info")


def snapshot(root) -> Dict[str, Entry]:
    """{path relative to ``root``: entry} of every file, folder and symbolic link under
    ``root`` but the :func:`skipped` ones; folders end with "/", links are not followed."""
    found = {}
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not skipped(d))
        for name in (*dirnames, *(f for f in filenames if not skipped(f))):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            try:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    found[rel] = ("link", os.readlink(path))
                elif stat.S_ISDIR(st.st_mode):
                    found[rel + "/"] = ("dir",)
                else:
                    found[rel] = ("file", st.st_size, st.st_mtime_ns)
            except FileNotFoundError:  # removed since it was listed: absent from this record
                pass
    return found


def changes(before: Dict[str, Entry], after: Dict[str, Entry]) -> List[str]:
    """The differences, sorted by path: lines "added: PATH", "removed: PATH", "changed: PATH"."""
    lines = []
    for path in sorted(before.keys() | after.keys()):
        if path not in before:
            lines.append(f"added: {path}")
        elif path not in after:
            lines.append(f"removed: {path}")
        elif before[path] != after[path]:
            lines.append(f"changed: {path}")
    return lines


def report(found: List[str]) -> str:
    listed = [f"  {line}" for line in found[:MAX_LISTED]]
    if len(found) > MAX_LISTED:
        listed.append(f"  ... {len(found) - MAX_LISTED} more")
    return "\n".join(
        [
            "the test session changed the working tree; a test must write under tmp_path "
            "(tests/tree_check.py):",
            *listed,
        ]
    )


def pytest_sessionstart(session):
    session.stash[_BEFORE] = snapshot(session.config.rootpath)


@pytest.fixture(scope="session", autouse=True)
def _working_tree_unchanged(request):
    """Fails the teardown of the session's last test when the tree changed under it."""
    yield
    before = request.session.stash.get(_BEFORE, None)
    if before is None:  # the plugin was registered after the session had started
        return
    found = changes(before, snapshot(request.config.rootpath))
    if found:
        pytest.fail(report(found), pytrace=False)
