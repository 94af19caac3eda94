"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

The content goes to a temporary file in the destination's folder, is flushed and fsynced,
then renamed over the destination (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import IO, Iterator

__all__ = ["AtomicWritesPathManager", "atomic_open", "atomic_write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on clean exit it replaces ``path``."""
    if "w" not in mode:
        raise ValueError(f"atomic_open writes only; got mode {mode!r}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the permissions open() would have given it
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


class AtomicWritesPathManager:
    """A stand-in for iopath's ``PathManager`` whose ``open`` in a write mode is
    :func:`atomic_open`; everything else goes to the real one. detectron2's evaluators write
    their outputs with ``PathManager.open(path, "w")``; with this in their module's
    ``PathManager`` (see ``seg_plugins.engine.trainer.AtomicCOCOEvaluator``) a kill mid-write
    leaves the previous file, not half a JSON."""

    def __init__(self, path_manager):
        self._path_manager = path_manager

    def open(self, path: str, mode: str = "r", *args, **kwargs):
        if "w" in mode and "://" not in str(path):
            return atomic_open(path, mode)
        return self._path_manager.open(path, mode, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._path_manager, name)
