"""Nesting, alias bombs and anonymous megabytes against a real `citadel api` over HTTP.

Bodies nested 100 to 5000 levels deep get a one-line 400 (never a 500 and a traceback in the
log); the API takes no YAML, so an alias bomb cannot reach it; and a request without valid
credentials is refused on its headers, before the service reads (or waits for) its body.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.api.conftest import Api, start_api

LEVELS = [100, 500, 950, 5000]
MIB = 1024 * 1024


def nested(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


# One body per kind of route, with DEEP where that route takes free-form values.
STEP = '{"step_id": "s", "type": "embedding", "parameters": {"text": "x"'
BODIES = {
    "workflow parameters": ("/api/v1/orchestration/workflow",
                            '{"workflow_id": "d", "steps": [' + STEP + ', "extra": DEEP}}]}'),
    "workflow context": ("/api/v1/orchestration/workflow",
                         '{"workflow_id": "d", "steps": [' + STEP + '}}], "context": DEEP}'),
    "search filter": ("/api/v1/search", '{"query": "x", "filter": {"k": DEEP}}'),
    "embeddings": ("/api/v1/embeddings/batch", '{"texts": ["x", DEEP]}'),
    "admin keys": ("/api/v1/admin/keys", '{"name": "n", "scopes": ["search"], "x": DEEP}'),
    "array": ("/api/v1/search", "DEEP"),
}


def log_since(api: Api, offset: int) -> str:
    """What the API logged after ``offset``, once a later request's line is in (so nothing is pending)."""
    with api.client() as client:
        client.get("/livez")
    time.sleep(0.2)
    return api.process.log_path.read_bytes()[offset:].decode(errors="replace")


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("kind", list(BODIES))
def test_deep_nesting_is_a_one_line_400_without_a_traceback(api: Api, kind: str, levels: int) -> None:
    path, template = BODIES[kind]
    deep = "[" * levels + "]" * levels if kind == "array" else nested(levels)
    offset = api.process.log_path.stat().st_size
    with api.client() as client:
        response = client.post(path, content=template.replace("DEEP", deep), headers=api.headers(**{"Content-Type": "application/json"}))
    assert response.status_code == 400, response.text[:500]
    answer = response.json()
    assert answer["success"] is False and answer["request_id"] == response.headers["x-request-id"]
    assert answer["error"]["code"] == "bad_request"
    message = answer["error"]["message"]
    assert message == "the body nests deeper than 64 levels (CITADEL_MAX_NESTING_DEPTH); nest arrays and objects less deeply"
    logged = log_since(api, offset)
    assert "Traceback" not in logged and "RecursionError" not in logged, logged[-3000:]
    assert len(logged.splitlines()) < 10, logged[-3000:]


def test_nesting_within_the_bound_reaches_the_route(api: Api) -> None:
    with api.client() as client:
        ok = client.post("/api/v1/embeddings/generate", json={"text": "hello"}, headers=api.headers())
        assert ok.status_code == 200, ok.text
        # 40 levels pass the edge; the route's own schema then refuses a nested filter value.
        inner = client.post("/api/v1/search", content=BODIES["search filter"][1].replace("DEEP", nested(40)),
                            headers=api.headers(**{"Content-Type": "application/json"}))
        assert inner.status_code == 422, inner.text[:500]


def test_the_api_takes_no_yaml_so_an_alias_bomb_cannot_reach_it(api: Api) -> None:
    lines = ["workflow_id: bomb", "steps:", "  - {step_id: s, type: embedding, parameters: {text: x}}", "context:",
             '  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = "\n".join(lines) + "\n"
    with api.client() as client:
        for media in ("application/yaml", "application/x-yaml", "text/yaml"):
            started = time.monotonic()
            response = client.post("/api/v1/orchestration/workflow", content=bomb, headers=api.headers(**{"Content-Type": media}))
            assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"
            assert time.monotonic() - started < 5
        # Sent as JSON, YAML text is not JSON: refused by the parser, never read as YAML.
        response = client.post("/api/v1/orchestration/workflow", content=bomb, headers=api.headers(**{"Content-Type": "application/json"}))
        assert response.status_code in (400, 422) and response.json()["success"] is False


def partial_request(
    api: Api, path: str, headers: dict[str, str], *, length: int = MIB, wait_s: float = 5
) -> tuple[float, int, dict[str, str], bytes]:
    """Send the headers of a ``length``-byte JSON body and only its first bytes; the seconds until
    the answer, its status, headers and body (status 0 when nothing came within ``wait_s``)."""
    where = urlsplit(api.url)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json", f"Content-Length: {length}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((host, port), timeout=wait_s) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + b'{"texts": ["')
        started = time.monotonic()
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            raw_head, _, body = data.partition(b"\r\n\r\n")
            lines = raw_head.decode("latin-1").split("\r\n")
            answer = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            while len(body) < int(answer.get("content-length", "0")):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        except TimeoutError:
            return time.monotonic() - started, 0, {}, b""
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    return time.monotonic() - started, status, answer, body


CREDENTIALS = {
    "none": {},
    "unknown key": {"X-API-Key": "ck_" + "0" * 40},
    "forged token": {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"},
    "both": {"Authorization": "Bearer x", "X-API-Key": "y"},
}


@pytest.mark.parametrize("who", list(CREDENTIALS))
@pytest.mark.parametrize("path", ["/api/v1/embeddings/batch", "/api/v1/orchestration/workflow", "/api/v1/admin/keys"])
def test_a_megabyte_without_valid_credentials_is_refused_before_it_is_read(api: Api, path: str, who: str) -> None:
    seconds, status, headers, body = partial_request(api, path, CREDENTIALS[who], wait_s=10)
    assert status == 401, f"no answer within {seconds:.1f}s: the service waited for the body" if not status else status
    assert seconds < 5  # an unknown key is looked up in Postgres, on a loaded machine: well within, without the body
    assert headers.get("www-authenticate") == "Bearer" and headers.get("x-request-id")
    assert json.loads(body)["error"]["code"] == "unauthorized"


def test_valid_credentials_still_send_their_body(api: Api) -> None:
    """The same request with a key is read to its end: the service waits for the rest of the body."""
    seconds, status, _, _ = partial_request(api, "/api/v1/embeddings/batch", api.headers("embed"), wait_s=1.5)
    assert status == 0 and seconds >= 1.4


@pytest.fixture(scope="module")
def limited_api(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Iterator[Api]:
    """The embedded defaults with three requests a minute per caller."""
    api = start_api("limited", tmp_path_factory.mktemp("api-limited"), prefect_api_url, CITADEL_API_RATE_LIMITS="3/minute")
    yield api
    api.process.stop()


def test_the_rate_limit_answers_before_the_body_is_read(limited_api: Api) -> None:
    statuses = []
    for _ in range(5):
        seconds, status, headers, _ = partial_request(limited_api, "/api/v1/embeddings/batch", {})
        assert status and seconds < 2, f"no answer within {seconds:.1f}s: the service waited for the body"
        statuses.append(status)
    assert statuses == [401, 401, 401, 429, 429], statuses
    assert "retry-after" in headers and "ratelimit" in headers


def test_a_request_checked_before_its_body_counts_once_against_the_limit(limited_api: Api) -> None:
    with limited_api.client() as client:
        statuses = [client.post("/api/v1/embeddings/generate", json={"text": "hello"}, headers=limited_api.headers("embed")).status_code
                    for _ in range(4)]
    assert statuses == [200, 200, 200, 429], statuses
