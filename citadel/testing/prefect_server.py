"""A real Prefect server and real workers, started as processes for integration tests.

``PrefectServer`` runs ``prefect server start`` on a free loopback port with its own home folder
(SQLite there, or the Postgres URL given), and every process it starts is stopped at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from citadel.testing.postgres import admin_execute, fresh_database, plain_url

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


RETRYABLE_STATUS = {429, 502, 503}


def retry_delay(response: httpx.Response | None, attempt: int) -> float:
    """Seconds to wait before the next try: exponential backoff, or the server's Retry-After when
    it asks for longer (a busy SQLite answers "0", and six tries at once outlast no lock)."""
    backoff = min(0.5 * 2.0**attempt, 8.0)
    if response is not None:
        try:
            return max(backoff, min(float(str(response.headers["Retry-After"])), 10.0))
        except (KeyError, ValueError):
            pass
    return backoff


async def create_prefect_database(admin_url: str, name: str) -> str:
    """A fresh Postgres database with pg_trgm (which Prefect's server needs); returns its asyncpg URL."""
    admin_url = plain_url(admin_url)
    await fresh_database(name, admin_url)
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    await admin_execute("CREATE EXTENSION IF NOT EXISTS pg_trgm", url)
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrefectServer:
    """``prefect server start`` plus the workers and commands run against it."""

    def __init__(self, home: Path, database_url: str | None = None, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.database_url = database_url
        self.extra_env = env or {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def env(self, **extra: str) -> dict[str, str]:
        """The environment every process of this server gets: its API, its home, no analytics."""
        env = {
            **os.environ,
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PYTHONPATH": str(REPO),
            **self.extra_env,
            **extra,
        }
        if self.database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        else:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{self.home / 'prefect.db'}"
        return env

    def spawn(self, name: str, args: list[str], **extra: str) -> subprocess.Popen[bytes]:
        """Start a long-running process (server, worker) with its output in a log file."""
        log = self.home / f"{name}.log"
        self.logs.append(log)
        handle = log.open("ab")
        proc = subprocess.Popen(
            args, cwd=REPO, env=self.env(**extra), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(proc)
        return proc

    def run(
        self, args: list[str], timeout: float = 180, without: tuple[str, ...] = (), **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion against this server (its environment ``without`` the named
        variables); a failure shows its output."""
        env = {key: value for key, value in self.env(**extra).items() if key not in without}
        done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def start(self, timeout: float = 120) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        self.spawn("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[0].poll() is not None:
                raise AssertionError(f"prefect server exited:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"prefect server did not answer in {timeout}s:\n{self.log_text()}")

    def start_worker(self, pool: str, name: str, **extra: str) -> subprocess.Popen[bytes]:
        return self.spawn(
            f"worker-{name}",
            [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", name, "--limit", "4"],
            **extra,
        )

    def api(self, method: str, path: str, attempts: int = 8, **kwargs: Any) -> Any:
        """Call the REST API as Prefect's own client does: a 503 or 429 (SQLite busy, rate limited) is retried.

        The server answers 503 when its database is momentarily locked, which happens on SQLite while
        workers and the scheduler write at once; every caller of the API is expected to retry it.
        """
        for attempt in range(attempts):
            last = attempt == attempts - 1
            response: httpx.Response | None = None
            try:
                response = httpx.request(method, f"{self.api_url}{path}", timeout=30, **kwargs)
            except httpx.TransportError:
                if last:
                    raise
            if response is not None and (response.status_code not in RETRYABLE_STATUS or last):
                response.raise_for_status()
                return response.json() if response.content else None
            time.sleep(retry_delay(response, attempt))
        raise AssertionError("unreachable")

    def deployment_id(self, full_name: str) -> str:
        flow_name, name = full_name.split("/")
        return str(self.api("GET", f"/deployments/name/{flow_name}/{name}")["id"])

    def wait_for_flow_run(self, flow_run_id: str, timeout: float = 240) -> dict[str, Any]:
        """Poll a flow run until it reaches a final state; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run: dict[str, Any] = self.api("GET", f"/flow_runs/{flow_run_id}")
            if run["state"] and run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
            time.sleep(0.25)
        raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout}s:\n{self.log_text()}")

    def log_text(self, tail: int = 6000) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-tail:]}" for log in self.logs if log.exists())

    def stop(self) -> None:
        """Stop every process started here, killing what lingers: the workers first, while the server
        still answers them (a worker stopped with its server gone retries it until it is killed),
        then the server. One deadline for each stage, not one per process."""
        for stage, grace in ((self.processes[1:][::-1], 10), (self.processes[:1], 20)):
            for proc in stage:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            for proc in stage:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        self.processes.clear()

    def __enter__(self) -> PrefectServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
