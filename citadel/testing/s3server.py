"""A real S3 server on loopback for tests and benchmarks: moto's server mode as a process of its own,
spoken to over HTTP by the real client, with its request log, so that a test can prove what was
listed and that no object was fetched.

moto's server (werkzeug) writes one line per request, ``"GET /bucket/key HTTP/1.1" 200``, to its
log file; :meth:`S3Server.requests` reads them back. With ``auth=True`` the server checks every
request's key id against its own IAM, so any credentials are refused (``InvalidAccessKeyId``).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import obstore
from obstore.store import S3Store

_ANNOUNCED = re.compile(r"Running on (http://127\.0\.0\.1:\d+)")
_REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
ACCESS_KEY_ID = "AKIAMOTOTESTKEY00XYZ"  # moto takes any key unless auth is on
SECRET_ACCESS_KEY = "moto-test-secret"


@dataclass(frozen=True)
class S3Request:
    """One request the server answered: its method, bucket, key (empty for a bucket's), query and status."""

    method: str
    bucket: str
    key: str
    query: Mapping[str, list[str]]
    status: int

    @property
    def is_list(self) -> bool:
        """A ListObjects page (a GET of the bucket)."""
        return self.method == "GET" and bool(self.bucket) and not self.key and "location" not in self.query

    @property
    def is_object_get(self) -> bool:
        """A GetObject: an object's bytes fetched."""
        return self.method == "GET" and bool(self.key)


def _parse(line: str) -> S3Request | None:
    found = _REQUEST.search(_COLOUR.sub("", line))
    if found is None:
        return None
    method, target, status = found.groups()
    parts = urlsplit(target)
    if parts.path.startswith("/moto-api"):
        return None
    bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
    return S3Request(method, bucket, key, parse_qs(parts.query), int(status))


class S3Server:
    """A running moto S3 server: its URL, its request log, and helpers to fill it."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.process = process
        self.url = url
        self.log_path = log_path

    def requests(self, since: int = 0) -> list[S3Request]:
        """The S3 requests answered so far (the server's own ``/moto-api`` calls left out), from the ``since``-th on."""
        text = self.log_path.read_text(errors="replace")
        found = [request for request in map(_parse, text.splitlines()) if request is not None]
        return found[since:]

    def mark(self) -> int:
        """How many requests were answered so far: pass it to :meth:`requests` to see only what follows."""
        return len(self.requests())

    def object_gets(self, since: int = 0) -> list[S3Request]:
        return [request for request in self.requests(since) if request.is_object_get]

    def lists(self, since: int = 0) -> list[S3Request]:
        return [request for request in self.requests(since) if request.is_list]

    def store(self, bucket: str) -> S3Store:
        """An obstore client of ``bucket`` on this server, with the test credentials."""
        return S3Store(
            bucket, endpoint=self.url, region="us-east-1", access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY, client_options={"allow_http": True},
        )

    def create_bucket(self, bucket: str) -> None:
        httpx.put(f"{self.url}/{bucket}", timeout=30).raise_for_status()

    async def put_objects(self, bucket: str, objects: Mapping[str, bytes], *, concurrency: int = 8) -> None:
        """Store ``objects`` (key: bytes) in ``bucket``, ``concurrency`` at a time."""
        store = self.store(bucket)
        gate = asyncio.Semaphore(concurrency)

        async def put(key: str, data: bytes) -> None:
            async with gate:
                await obstore.put_async(store, key, data)

        await asyncio.gather(*(put(key, data) for key, data in objects.items()))

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        obstore.put(self.store(bucket), key, data)

    def delete_object(self, bucket: str, key: str) -> None:
        obstore.delete(self.store(bucket), key)

    def stop(self, timeout: float = 10) -> int:
        """Stop the server's process group (SIGTERM, then SIGKILL); returns its exit code."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], number: signal.Signals) -> None:
    try:
        os.killpg(process.pid, number)
    except ProcessLookupError:
        pass


def start_s3_server(log_dir: Path, *, auth: bool = False, timeout: float = 60) -> S3Server:
    """Start moto's S3 server on a free loopback port (its own process group) and return it once it
    answers. ``auth`` turns on moto's IAM checks from the first request, so every key is refused."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"moto-{time.time_ns()}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
    server = S3Server(process, "", log_path)
    try:
        server.url = _wait_until_answering(process, log_path, time.monotonic() + timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_answering(process: subprocess.Popen[bytes], log_path: Path, deadline: float) -> str:
    """The URL the server announced in its log, once a request to it is answered."""
    url = None
    while time.monotonic() < deadline and process.poll() is None:
        if url is None:
            found = _ANNOUNCED.search(log_path.read_text(errors="replace"))
            url = found.group(1) if found else None
        if url is not None:
            try:
                if httpx.get(f"{url}/moto-api/", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    tail = log_path.read_text(errors="replace")[-500:]
    raise RuntimeError(f"moto's S3 server did not answer (exit code {process.poll()}): {tail}")


def closed_port_url() -> str:
    """An http:// URL on loopback where nothing listens (a port just bound and released): connection refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
