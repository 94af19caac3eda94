"""seg_plugins.utils.memory.keep_freed_memory: a large block freed and allocated again is
served from the kept heap instead of fresh, page-faulted memory. Run in subprocesses: the
setting is process-wide and permanent."""

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
import torch
from seg_plugins.utils.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
n = 64 * 2**20 // 4  # 64 MiB of float32: above glibc's largest mmap threshold (32 MiB)
torch.empty(n).fill_(1.0)  # first touch: faulted in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(n).fill_(1.0)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(applied, faults)
"""
PAGES = 10 * 64 * 2**20 // 4096


def _faults(mode):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


MALLINFO = """
import ctypes, sys
import torch
from seg_plugins.utils.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
          "fordblks", "keepcost")
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
before = libc.mallinfo2()
block = torch.empty(64 * 2**20 // 4).fill_(1.0)
held = libc.mallinfo2()
del block
freed = libc.mallinfo2()
print(applied, held.hblkhd - before.hblkhd, freed.fordblks)
"""


def _heap(mode):
    out = subprocess.run(
        [sys.executable, "-c", MALLINFO, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")


@linux
def test_a_freed_block_stays_in_the_heap_instead_of_being_unmapped():
    """The mechanism, read from glibc's own counters (mallinfo2): by default a 64 MiB block
    is a separate mmap (given back to the kernel when freed); kept, it comes from the heap,
    and after the free the heap holds it as free space (fordblks), for the next step."""
    applied, mmapped, free_in_heap = _heap("keep")
    assert applied
    assert mmapped == 0 and free_in_heap >= 64 * 2**20
    _, mmapped, free_in_heap = _heap("default")
    assert mmapped >= 64 * 2**20 and free_in_heap < 64 * 2**20


@linux
def test_kept_memory_is_not_faulted_in_again():
    """The effect: far fewer page faults when the block is allocated again. Not zero: this
    host runs DAMON proactive reclaim (/sys/kernel/mm/damon), which pages out idle freed
    heap between allocations. Quiet runs fault in 1 or 2 of the 10 blocks, CI runs up to 4,
    against all 10 by default. So the bound is less than half the default's faults, in the
    best of up to 3 measurements; the mechanism itself is checked exactly above."""
    applied, kept = _faults("keep")
    assert applied
    _, default = _faults("default")
    assert default > 0.9 * PAGES  # glibc munmaps the 64 MiB block and faults it in again
    runs = [kept]
    while min(runs) >= 0.5 * default and len(runs) < 3:
        runs.append(_faults("keep")[1])
    assert min(runs) < 0.5 * default, (runs, default)


def test_keep_freed_memory_is_idempotent():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from seg_plugins.utils.memory import keep_freed_memory as k; print(k(), k())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == out[1]
