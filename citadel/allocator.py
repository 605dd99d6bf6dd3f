"""glibc's mmap threshold, fixed for a process that indexes: its big transient buffers (a batch's
vectors, an upload's JSON, an embedding server's answer) are mapped on their own and handed back
to the system when freed, so a long run's memory does not grow with its length.

By default glibc raises the threshold to the largest mapped buffer freed (up to 32 MB). After the
first batch every buffer of a run then comes from its heaps, among smaller objects that live
longer, and the heaps keep the holes: the longer the run, the more of them (measured in
docs/benchmarks.md, "Scale").
"""

from __future__ import annotations

import ctypes
import os
import threading

M_MMAP_THRESHOLD = -3  # mallopt's parameter (malloc.h); setting it also stops glibc raising it
MAX_THRESHOLD_KB = 32 * 1024  # glibc refuses more on 64-bit (HEAP_MAX_SIZE / 2)

_lock = threading.Lock()
_fixed_kb: int | None = None


def is_glibc() -> bool:
    """Whether this process runs on glibc (musl and other C libraries have no such setting)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False


def fix_mmap_threshold(kb: int) -> bool:
    """Map every allocation of ``kb`` KB or more on its own, for the rest of the process. Safe to
    call from every run (it sets the value once); returns whether it is in force. 0 leaves glibc's
    own sliding threshold, as does a C library other than glibc."""
    global _fixed_kb
    if kb <= 0 or not is_glibc():
        return False
    with _lock:
        if _fixed_kb == kb:
            return True
        if not ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, min(kb, MAX_THRESHOLD_KB) * 1024):
            return False
        _fixed_kb = kb
        return True
