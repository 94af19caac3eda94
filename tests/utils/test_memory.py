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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")
def test_kept_memory_is_not_faulted_in_again():
    applied, kept = _faults("keep")
    assert applied
    _, default = _faults("default")
    assert default > 0.9 * PAGES  # glibc munmaps the 64 MiB block and faults it in again
    # Reused from the heap: measured 1 or 2 of the 10 blocks faulted in (5 runs), against
    # all 10 by default. Not 0: this host runs DAMON proactive reclaim (/sys/kernel/mm/damon),
    # which can page out the idle freed heap between allocations, more so on a loaded
    # machine (a CI run once saw 3). That is the kernel's doing, not the allocator's, so the
    # measurement is repeated (up to 3 runs) and the best one is held to the bound: an
    # allocator that gave the blocks back would fault in all 10 every time.
    runs = [kept]
    while min(runs) > 0.2 * PAGES and len(runs) < 3:
        runs.append(_faults("keep")[1])
    assert min(runs) <= 0.2 * PAGES, runs


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
