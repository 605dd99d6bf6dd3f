"""``citadel api`` as a process of its own, for the tests and the benchmark: started on a free
port with the given environment, ready once ``/livez`` answers, stopped with SIGTERM so that it
shuts down the way a service manager stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from citadel.testing.prefect_server import free_port


class ApiProcess:
    """One running API server: its process, URL and log file."""

    def __init__(self, env: Mapping[str, str], cwd: Path, *, port: int | None = None, args: list[str] | None = None,
                 scheme: str = "http") -> None:
        self.port = port or free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = cwd / f"api-{self.port}.log"
        self.cwd = cwd
        self.env = {**os.environ, **env}
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60, verify: str | bool = True) -> ApiProcess:
        command = [sys.executable, "-m", "cli", "api", "--port", str(self.port), *self.args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API exited with {self.proc.returncode} at start:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/livez", timeout=2, verify=verify).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the API did not answer within {timeout}s:\n{self.log()}")

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 40) -> int | None:
        """SIGTERM, then wait (in-flight requests drain); SIGKILL only if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"the API did not stop within {timeout}s of SIGTERM:\n{self.log()}") from None

    def __enter__(self) -> ApiProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
