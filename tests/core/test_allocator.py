"""glibc's mmap threshold, fixed for an indexing process: a buffer above it is mapped on its own
even after a bigger one was freed, which by default raises the threshold past it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from citadel import allocator
from citadel.allocator import is_glibc
from citadel.testing.corpus import index_with_own_backends, write_corpus

pytestmark = pytest.mark.skipif(not is_glibc(), reason="glibc's own setting: other C libraries have none")

# How many bytes glibc maps on their own for a 2 MB buffer allocated after a 20 MB one was freed.
PROBE = """
import ctypes, sys
import numpy as np
from citadel.allocator import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
big = np.ones(20 << 20, np.uint8)
del big  # glibc's sliding threshold rises to 20 MB
print(fix_mmap_threshold(int(sys.argv[1])))
before = libc.mallinfo2().hblkhd
buffer = np.ones(2 << 20, np.uint8)
print(libc.mallinfo2().hblkhd - before)
"""


def _probe(kb: int) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", PROBE, str(kb)], capture_output=True, text=True, check=True)
    fixed, mapped = done.stdout.split()
    return fixed, int(mapped)


def test_a_fixed_threshold_maps_a_big_buffer_on_its_own_after_a_bigger_one_was_freed() -> None:
    assert _probe(1024) == ("True", pytest.approx(2 << 20, abs=8192))


def test_zero_leaves_glibcs_sliding_threshold_which_keeps_the_buffer_in_its_heap() -> None:
    assert _probe(0) == ("False", 0)


async def test_an_index_run_fixes_the_threshold_its_settings_name(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITADEL_INDEX_MMAP_THRESHOLD_KB", "2048")
    write_corpus(tmp_path / "corpus", files=1)
    await index_with_own_backends(str(tmp_path / "corpus"), collection_name)
    assert allocator._fixed_kb == 2048
