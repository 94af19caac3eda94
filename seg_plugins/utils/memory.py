"""CPU training on large images: stop the C allocator from giving memory back every step.

PyTorch's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold
(at most 32 MiB) with a fresh ``mmap`` and returns them with ``munmap`` when freed, so a
training step whose activations are larger than that page-faults all of them in again, every
step: the kernel zero-fills each 4 KiB page on first touch. Measured on FCN-ResNet50 (2-core
AMD EPYC, docs/speed.md): at 512x512 one step takes 0.45 M minor page faults and 1.1 s of
system time; at 1024x1024 3.5 M faults (13.5 GiB touched anew) and 8 s of system time, which
made the step grow 1.16-1.28x faster than its FLOPs. With every block served from the heap
and the heap never trimmed, the same 1024x1024 step takes 0.3 M faults and 1.5 s.

The price: the process keeps its peak heap instead of handing freed memory back to the
system, which a training process reaches again on every step anyway.

No library offers this (jemalloc / tcmalloc do it by design but need an ``LD_PRELOAD`` before
the process starts); glibc's ``mallopt`` does it at run time, for this process and for the
data-loader workers it forks afterwards.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["keep_freed_memory"]

logger = logging.getLogger(__name__)

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc serve every allocation from its heap (``M_MMAP_MAX`` 0) and never shrink
    the heap (``M_TRIM_THRESHOLD`` -1, i.e. SIZE_MAX). Idempotent. Returns whether it is in
    effect (False off Linux / glibc)."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, -1) != 1:
        logger.warning("mallopt refused M_MMAP_MAX / M_TRIM_THRESHOLD; the allocator is unchanged")
        return False
    _applied = True
    logger.info(
        "CPU allocator: freed memory is kept for reuse (no per-step page faults on large "
        "activations; SOLVER.CPU_KEEP_FREED_MEMORY)"
    )
    return True
