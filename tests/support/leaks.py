"""Find processes that a test session started and left behind.

Every process the tests start inherits a session mark in its environment. One that outlives its
parent is re-parented to init (or a subreaper); finding such orphans at the end of the session
catches a test that forgot to stop what it started (a Prefect server, a worker, a Qdrant server).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

MARK = "CITADEL_TEST_SESSION"


def mark_session(fresh: bool = False) -> str:
    """Put this session's mark in the environment that every started process inherits.

    A mark already there (a session started by another) is kept, unless ``fresh``: a worker of a
    parallel run inherits its controller's mark and takes its own instead.
    """
    if fresh:
        os.environ[MARK] = f"{os.getpid()}-{time.time_ns()}"
    return os.environ.setdefault(MARK, f"{os.getpid()}-{time.time_ns()}")


def orphans() -> dict[int, str]:
    """Processes carrying this session's mark whose parent neither carries it nor is this process.

    Such a parent is init or a subreaper: the process outlived whoever started it.
    """
    needle = f"{MARK}={os.environ[MARK]}".encode()
    marked: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError, ValueError):
            continue  # exited while being read, or not ours to read
        marked[int(entry.name)] = (ppid, cmdline)
    return {pid: cmd for pid, (ppid, cmd) in marked.items() if ppid not in marked and ppid != os.getpid()}


def reap(grace_s: float = 15.0) -> dict[int, str]:
    """Wait for orphans to finish on their own, then kill those left; return what had to be killed."""
    deadline = time.monotonic() + grace_s
    left = orphans()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = orphans()
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left
