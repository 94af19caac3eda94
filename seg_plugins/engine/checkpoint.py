"""Checkpoints that survive a kill: detectron2's ``DetectionCheckpointer`` with atomic writes.

fvcore's ``Checkpointer.save`` streams ``torch.save`` straight into ``<name>.pth`` and then
rewrites ``last_checkpoint`` in place: a run killed (or out of disk) during either write
leaves a truncated file that ``--resume`` then fails on, or, worse, points at. Here both go
through :func:`seg_plugins.utils.file_io.atomic_open` (temporary file in the same folder,
fsync, ``os.replace``): at any moment each file is either its previous complete version or
the new complete one. A failed write (``OSError``: disk full, quota, permissions) leaves the
previous checkpoint and ``last_checkpoint`` untouched and says so.
"""

from __future__ import annotations

import json
import os
import re

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..utils.file_io import atomic_open, atomic_write_text

__all__ = ["AtomicCheckpointer", "trim_metrics_for_resume"]

# atomic_open's temporary files for checkpoints and last_checkpoint
_STALE = re.compile(r"^\.(.+\.pth|last_checkpoint)\.[^.]+\.tmp$")


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose ``save`` and ``tag_last_checkpoint`` are atomic. On
    creation it removes the temporary files of saves that a kill interrupted
    (``.<name>.pth.<random>.tmp`` in its folder)."""

    def __init__(self, model, save_dir: str = "", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        if self.save_dir and self.save_to_disk and os.path.isdir(self.save_dir):
            stale = [n for n in os.listdir(self.save_dir) if _STALE.match(n)]
            for name in stale:
                os.unlink(os.path.join(self.save_dir, name))
            if stale:
                self.logger.info(f"Removed {len(stale)} interrupted checkpoint write(s): {stale}")

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        try:
            with atomic_open(path, "wb") as f:
                torch.save(data, f)
        except OSError as err:
            last = self._last_checkpoint_name()
            kept = f"the previous checkpoint {last!r} is intact" if last else "none saved before"
            raise OSError(
                err.errno,
                f"could not save checkpoint {path}: {err.strerror or err}; nothing was "
                f"replaced ({kept}). Free disk space (or point OUTPUT_DIR elsewhere) and "
                f"resume with --resume",
            ) from err
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def _last_checkpoint_name(self) -> str:
        path = os.path.join(self.save_dir, "last_checkpoint")
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return ""


def trim_metrics_for_resume(path: str, start_iter: int) -> int:
    """Cut detectron2's ``metrics.json`` (one JSON object per line, appended) back to the
    records of iterations before ``start_iter``, and drop a last line that a kill left
    incomplete, so that a resumed run appends after the checkpoint's iteration: no line
    glued to a half-written one, no iteration logged twice. The file is truncated in place
    (a single ``truncate``; the writer's append-mode handle then writes at the new end).
    Returns the number of lines removed."""
    if not os.path.isfile(path):
        return 0
    with open(path, "rb") as f:
        data = f.read()
    offset, cut = 0, None
    for line in data.splitlines(keepends=True):
        try:
            record = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            record = None
        late = isinstance(record, dict) and record.get("iteration", -1) >= start_iter
        if record is None or late:
            cut = offset
            break
        offset += len(line)
    if cut is None:
        return 0
    removed = data[cut:].count(b"\n") + (0 if data.endswith(b"\n") else 1)
    os.truncate(path, cut)
    return removed
