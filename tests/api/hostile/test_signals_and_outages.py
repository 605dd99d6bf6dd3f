"""Hostile tests of the service's process and its dependencies, over HTTP against real ``citadel api``
processes: slow clients, a Postgres outage, SIGTERM during a workflow run, SIGKILL of a process
that started its own local Prefect server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from citadel.settings import Settings
from citadel.testing.api_process import ApiProcess
from citadel.testing.corpus import write_corpus
from citadel.testing.tcpproxy import TcpProxy
from tests.api.conftest import Api, base_env, create_keys
from tests.conftest import POSTGRES_URL
from tests.support.embedding_server import EmbeddingServer

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

READ_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def postgres_proxy() -> Iterator[TcpProxy]:
    """The test Postgres behind a proxy this module can cut, as if the server stopped."""
    parts = urlsplit(POSTGRES_URL)
    with TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def fragile_api(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str, postgres_proxy: TcpProxy) -> Iterator[Api]:
    """An API on the embedded store whose registry (Postgres) is reached through the proxy, with short read deadlines."""
    root = tmp_path_factory.mktemp("api-fragile")
    database_url = postgres_proxy.url_for(POSTGRES_URL)
    env = base_env(
        root / "data", PREFECT_API_URL=prefect_api_url, CITADEL_DATABASE_URL=database_url,
        CITADEL_API_HEADER_TIMEOUT_S=str(READ_TIMEOUT_S), CITADEL_API_BODY_TIMEOUT_S=str(READ_TIMEOUT_S),
    )
    settings = Settings(data_dir=root / "data", database_url=POSTGRES_URL)
    keys = asyncio.run(create_keys(settings))
    process = ApiProcess(env, root).start()
    yield Api("fragile", process, settings, keys, env)
    postgres_proxy.restore()
    process.stop()


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes) -> float | None:
    """Send ``trickle`` a byte every 0.2 s; the seconds until the server closed the socket, or None if it never did."""
    start = time.monotonic()
    sock.settimeout(0.2)
    for byte in trickle:
        if time.monotonic() - start > seconds:
            return None
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(4096) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:  # reset, or a write to a closed socket
            return time.monotonic() - start
    return None


def test_slowloris_headers_are_cut_off_at_the_header_deadline(fragile_api: Api) -> None:
    """A client that sends its request line and headers a byte at a time is closed, not waited for."""
    port = urlsplit(fragile_api.url).port
    assert port
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        closed = _closed_within(sock, READ_TIMEOUT_S + 4, b"X-Slow: " + b"a" * 200)
    assert closed is not None, "the server still held a connection trickling its headers"
    assert closed <= READ_TIMEOUT_S + 1.5


def test_a_silent_connection_is_closed_at_the_header_deadline(fragile_api: Api) -> None:
    port = urlsplit(fragile_api.url).port
    assert port
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(READ_TIMEOUT_S + 4)
        start = time.monotonic()
        try:
            assert sock.recv(1) == b""
        except TimeoutError:
            pytest.fail("the server held a connection that sent nothing")
        assert time.monotonic() - start <= READ_TIMEOUT_S + 1.5


def test_a_body_sent_a_byte_at_a_time_is_cut_off_at_the_body_deadline(fragile_api: Api) -> None:
    port = urlsplit(fragile_api.url).port
    assert port
    body = b'{"text": "' + b"x" * 300 + b'"}'
    head = (f"POST /api/v1/embeddings/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-API-Key: {fragile_api.keys['embed']}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        closed = _closed_within(sock, READ_TIMEOUT_S + 4, body)
    assert closed is not None, "the server still held a connection trickling its body"
    assert closed <= READ_TIMEOUT_S + 1.5


def test_a_fast_client_on_a_kept_alive_connection_is_served(fragile_api: Api) -> None:
    """The deadlines cut slow clients only: requests on one connection, spaced below the keep-alive, are all answered."""
    with fragile_api.client(headers=fragile_api.headers("reader")) as client:
        for _ in range(3):
            assert client.get("/api/v1/health").status_code == 200
            time.sleep(READ_TIMEOUT_S / 2)


def test_a_postgres_outage_is_503_naming_the_registry(fragile_api: Api, postgres_proxy: TcpProxy) -> None:
    with fragile_api.client(headers=fragile_api.headers("reader")) as client:
        collection = f"none_{uuid.uuid4().hex[:8]}"
        before = client.post("/api/v1/search", json={"query": "anything", "collection": collection})
        assert before.status_code == 404, before.text
        postgres_proxy.cut()
        try:
            during = client.post("/api/v1/search", json={"query": "anything", "collection": collection})
        finally:
            postgres_proxy.restore()
        assert during.status_code == 503, during.text
        error = during.json()["error"]
        assert error["code"] == "unavailable" and "registry" in error["message"], error
        assert POSTGRES_URL.split("@")[0] not in during.text  # no credential or URL in the answer
        for _ in range(20):  # the pool reconnects once Postgres is back
            after = client.post("/api/v1/search", json={"query": "anything", "collection": collection})
            if after.status_code == 404:
                break
            time.sleep(0.5)
        assert after.status_code == 404, after.text


# --- signals -------------------------------------------------------------------------------------

DRAIN_S = 30 + 10  # in-flight requests, then runs started in the process (docs/api.md)
PREFECT_SERVER = "prefect.server.api.server:create_app"


def _children(pid: int) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _prefect_server_of(proc: subprocess.Popen[bytes], timeout: float, log: Path) -> int:
    """The local Prefect server ``proc`` started, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        servers = [pid for pid, cmd in _children(proc.pid).items() if PREFECT_SERVER in cmd]
        if servers:
            return servers[0]
        assert proc.poll() is None, f"the process exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no local Prefect server started within {timeout}s:\n{log.read_text()[-3000:]}")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)  # what the test found left behind
    return False


def _no_prefect_api(env: dict[str, str], root: Path) -> dict[str, str]:
    """The environment without a Prefect API (a local server is started) and with a Prefect home of its own."""
    env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(root / "prefect-home")
    return env


def test_sigkill_of_the_api_takes_its_local_prefect_server_with_it(tmp_path: Path) -> None:
    env = _no_prefect_api(base_env(tmp_path / "data"), tmp_path)
    process = ApiProcess(env, tmp_path).start()
    assert process.proc is not None
    server = _prefect_server_of(process.proc, 90, process.log_path)
    process.proc.kill()
    process.proc.wait()
    assert _gone_within(server, 8), "the API's local Prefect server outlived the API"


def test_sigkill_of_an_index_run_takes_its_local_prefect_server_with_it(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=30, paragraphs=6)
    env = _no_prefect_api(base_env(tmp_path / "data"), tmp_path)
    log = tmp_path / "index.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "index", str(corpus), "--collection", "killed"],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        server = _prefect_server_of(proc, 90, log)
    finally:
        proc.kill()
        proc.wait()
    assert _gone_within(server, 8), "the index run's local Prefect server outlived it"


def test_sigterm_during_a_workflow_run_inside_the_api_drains_and_exits_0(tmp_path: Path, prefect_api_url: str) -> None:
    """Prefect's run engine takes SIGTERM over while a flow runs in the process; the service must still drain and exit."""
    embedder = EmbeddingServer().start()
    embedder.serial(per_request_s=0.05, per_text_s=0.2)  # 130 texts: half a minute of work
    env = base_env(tmp_path / "data", PREFECT_API_URL=prefect_api_url, CITADEL_EMBEDDER="ollama", CITADEL_OLLAMA_URLS=embedder.url)
    settings = Settings(data_dir=tmp_path / "data")
    keys = asyncio.run(create_keys(settings))
    process = ApiProcess(env, tmp_path).start()
    assert process.proc is not None
    steps = [{"step_id": "embed", "type": "embedding", "parameters": {"texts": [f"text {i} {uuid.uuid4()}" for i in range(130)]}}]
    try:
        with httpx.Client(base_url=process.url, headers={"X-API-Key": keys["workflows"]}, timeout=30) as client:
            submitted = client.post("/api/v1/orchestration/workflow", json={"workflow_id": "long", "steps": steps})
            assert submitted.status_code == 200 and submitted.json()["runs_in"] == "api", submitted.text
            status_url = submitted.json()["status_url"]
            deadline = time.monotonic() + 60
            while client.get(status_url).json()["status"] != "Running":
                assert time.monotonic() < deadline, "the run never started"
                time.sleep(0.2)
            time.sleep(2)  # well inside the run
            assert client.get(status_url).json()["status"] == "Running"
        sent = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)
        try:
            code = process.proc.wait(DRAIN_S + 5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the API still ran {DRAIN_S + 5}s after SIGTERM:\n{process.log()}")
        assert code == 0, process.log()
        assert time.monotonic() - sent <= DRAIN_S + 5
        run = httpx.get(f"{prefect_api_url}/flow_runs/{submitted.json()['task_id']}", timeout=10).json()
        assert run["state"]["type"] in ("CRASHED", "CANCELLED", "COMPLETED"), run["state"]  # stopped, never left Running
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()
        embedder.stop()


def test_postgres_lost_mid_index_is_reported_as_the_registry_lost(tmp_path: Path, prefect_api_url: str, postgres_proxy: TcpProxy) -> None:
    """The first real cause is shown, not the lock release that failed after it."""
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=40, paragraphs=4)
    embedder = EmbeddingServer().start()
    embedder.serial(per_request_s=0.2, per_text_s=0.02)
    env = base_env(tmp_path / "data", PREFECT_API_URL=prefect_api_url, CITADEL_DATABASE_URL=postgres_proxy.url_for(POSTGRES_URL),
                   CITADEL_EMBEDDER="ollama", CITADEL_OLLAMA_URLS=embedder.url)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "index", str(corpus), "--collection", f"lost_{uuid.uuid4().hex[:8]}"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while sum(embedder.requests.values()) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never embedded"
            time.sleep(0.1)
        postgres_proxy.cut()
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            postgres_proxy.restore()
    finally:
        embedder.stop()
    assert proc.returncode != 0, out
    assert "the registry was lost" in err, err
    assert "pg_advisory_unlock" not in err, err
