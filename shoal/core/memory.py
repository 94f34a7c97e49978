"""Process-level memory tuning, for node processes that opt in (never on import, never in a driver)."""

from __future__ import annotations

import sys

_RETAINED = False


def retain_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks instead of handing them back to the OS (once per process).

    Every gradient step allocates and frees the same activation-sized blocks (~0.5 MB for
    256-wide layers at batch 256). By default glibc serves blocks that large with fresh
    ``mmap`` pages and returns them on free, so each step pays hundreds of page faults
    (measured on a SAC step at 256 units and batch 256: 300-900 minor faults and 1-4 ms of
    kernel time per step without this, about none with it). Raising the mmap and trim
    thresholds to 32 MB makes the heap reuse them. This changes the whole process's
    allocator, so only processes that are shoal's own call it: a learner node that owns its
    process (on Ray) and the ``shoal train`` CLI. A no-op returning False off glibc.
    The continuous agents' large products run in oneDNN, which returns a fresh block for each:
    here those are reused (:data:`shoal.agents.continuous.fused.ONEDNN`).
    """
    global _RETAINED
    if _RETAINED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        limit = 32 * 1024 * 1024  # glibc's largest allowed mmap threshold on 64-bit
        _RETAINED = bool(libc.mallopt(m_mmap_threshold, limit)) and bool(libc.mallopt(m_trim_threshold, 2 * limit))
    except (OSError, AttributeError):
        _RETAINED = False
    return _RETAINED
