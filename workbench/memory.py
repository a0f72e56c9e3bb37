"""How this process's C allocator treats memory it frees: kept for reuse, or handed back to the kernel.

A cache of every hook keeps gigabytes of activations. With glibc's default settings, freeing such
a cache hands most of that memory back to the kernel (the heap is trimmed, large blocks are
unmapped), so the next cache takes every page fresh again, and the kernel zeroes each 4 KiB page
on first touch: 570,000 page faults and ~1 s per 2.2 GB cache where ``bench/hooks.py`` ran, more
than half of the forward itself. Keeping freed memory (as PyTorch's CPU tuning guide does with
jemalloc's ``dirty_decay_ms:-1``) makes the next cache reuse it.

``import workbench`` keeps freed memory unless the environment variable
``WORKBENCH_KEEP_FREED_MEMORY`` is ``0`` (or ``false``, ``no``, ``off``). The cost: the process
holds on to its peak heap (its resident size does not shrink after a large cache is freed) until
it exits.
"""

from __future__ import annotations

import ctypes
import os
import platform

ENV = "WORKBENCH_KEEP_FREED_MEMORY"

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# the largest block glibc will serve from its heaps on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX);
# larger ones are always mapped and unmapped on their own
_MMAP_THRESHOLD_MAX = 32 * 2**20

_kept = False


def keep_freed_memory() -> bool:
    """Make glibc keep the memory this process frees for its next allocations: the heap is never
    trimmed, and blocks up to 32 MiB come from the heap instead of mappings of their own.

    Process-wide and permanent (glibc cannot go back to its adaptive thresholds). Returns whether
    the allocator now keeps freed memory: False where the C library is not glibc (macOS, musl),
    which manage freed memory their own way.
    """
    global _kept
    if _kept:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    # -1: never trim (mallopt's documented value); a fixed mmap threshold as well, since setting
    # either turns off glibc's adaptive thresholds, which would otherwise leave it at 128 KiB
    _kept = bool(libc.mallopt(_M_TRIM_THRESHOLD, -1)) and bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX))
    return _kept


def keeps_freed_memory() -> bool:
    """Whether ``keep_freed_memory`` has taken effect in this process."""
    return _kept


def keep_unless_disabled() -> bool:
    """``keep_freed_memory()``, unless the environment says ``WORKBENCH_KEEP_FREED_MEMORY=0``."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return keep_freed_memory()
