"""The session's orphan check finds a process a test left behind, and kills it."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.support import leaks

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)


def test_an_orphaned_process_of_this_session_is_found_and_killed() -> None:
    # The shell exits at once and leaves its background sleep to init: an orphan carrying the mark.
    subprocess.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"], check=True, capture_output=True, text=True)
    deadline = time.monotonic() + 10
    while not (found := {p: c for p, c in leaks.orphans().items() if c.startswith("sleep 300")}):
        assert time.monotonic() < deadline, "the orphaned sleep was not found"
        time.sleep(0.1)
    (pid,) = found
    killed = leaks.reap(grace_s=0)
    assert pid in killed
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]


def test_processes_of_other_sessions_are_left_alone() -> None:
    env = {**os.environ, leaks.MARK: "another-session"}
    proc = subprocess.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"], check=True, capture_output=True, text=True, env=env)
    pid = int(proc.stdout)
    try:
        time.sleep(0.2)
        assert pid not in leaks.orphans()
    finally:
        os.kill(pid, 9)
