"""The Qdrant REST test server (``tests/support/qdrant_server.py``) as a process of its own, for
tests and the benchmark that need several processes to share one store over Qdrant's REST API.

Only the process is handled here; the server itself lives with the tests (it needs Starlette).
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
URL_LINE_PREFIX = "QDRANT_TEST_SERVER_URL="


def start_qdrant_process(
    path: Path | str, port: int | None = None, *, timeout: float = 30
) -> tuple[subprocess.Popen[str], str]:
    """Run the server as its own process; return it and its URL once ``GET /healthz`` answers.

    Without ``port`` the child binds a free one and announces it on its first stdout line, so
    there is no race for the port. Stop it with :func:`stop_qdrant_process` (or kill it).
    """
    command = [sys.executable, "-m", "tests.support.qdrant_server", "--path", str(path), "--port", str(port or 0)]
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        url = None
        while url is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                raise RuntimeError(f"the Qdrant server process did not announce its URL (exit code {proc.poll()})")
            ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.5))
            if ready:
                line = proc.stdout.readline()
                if line.startswith(URL_LINE_PREFIX):
                    url = line[len(URL_LINE_PREFIX) :].strip()
                elif not line and proc.poll() is not None:
                    continue
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Qdrant server process at {url} did not become healthy (exit code {proc.poll()})"
                )
            time.sleep(0.02)
    except BaseException:
        stop_qdrant_process(proc)
        raise


def stop_qdrant_process(proc: subprocess.Popen[str], *, timeout: float = 10) -> int:
    """Terminate the server process (SIGTERM: graceful), kill it if it lingers; returns its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode
