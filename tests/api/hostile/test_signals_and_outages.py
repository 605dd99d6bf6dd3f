"""Hostile tests of the service's process and its dependencies, over HTTP against real ``citadel api``
processes: slow clients, a Postgres outage, SIGTERM during a workflow run, SIGKILL of a process
that started its own local Prefect server."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from citadel.settings import Settings
from citadel.testing.api_process import ApiProcess
from citadel.testing.tcpproxy import TcpProxy
from tests.api.conftest import Api, base_env, create_keys
from tests.conftest import POSTGRES_URL

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
