"""Security of the service over HTTP: credentials and scopes, admin networks, trusted proxies,
shared rate limits, CORS, body and media-type limits, the secure headers and the error shape."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from citadel.apikeys import ApiKeys
from citadel.registry import Registry
from citadel.testing.api_process import ApiProcess
from tests.api.conftest import Api, base_env, start_api
from tests.conftest import POSTGRES_URL, REDIS_URL

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

ORIGIN = "https://app.example.com"
LIMITS = "1000/second;12/minute"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Iterator[tuple[Api, ApiProcess]]:
    """Two API processes on one Redis and Postgres, behind a trusted proxy on the loopback, with
    tight rate limits and body size, and one allowed origin."""
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter("citadel-rate*"):
        client.delete(key)
    client.close()
    extra = dict(
        CITADEL_REDIS_URL=REDIS_URL, CITADEL_DATABASE_URL=POSTGRES_URL, CITADEL_API_RATE_LIMITS=LIMITS,
        CITADEL_API_TRUSTED_PROXIES="127.0.0.1/32", CITADEL_API_CORS_ORIGINS=ORIGIN, CITADEL_API_MAX_BODY_BYTES="2048",
        CITADEL_API_ADMIN_ALLOW="127.0.0.1/32", CITADEL_API_ADMIN_DENY="192.0.2.0/24",
        CITADEL_API_RATE_LIMIT_EXEMPT="198.51.100.7/32",
    )
    root = tmp_path_factory.mktemp("api-secured")
    first = start_api("secured", root, prefect_api_url, **extra)
    second_root = root / "second"
    second_root.mkdir()
    env = {**first.env, "CITADEL_DATA_DIR": str(second_root / "data")}  # own embedded store, shared Redis and Postgres
    second = ApiProcess(env, second_root).start()
    yield first, second
    second.stop()
    first.process.stop()


async def _fresh_key(api: Api, scopes: list[str]) -> str:
    registry = Registry(api.settings.registry_url)
    await registry.init()
    try:
        return (await ApiKeys(registry).create(f"t-{uuid.uuid4().hex[:6]}", scopes, collections="*")).key
    finally:
        await registry.aclose()


def fresh_key(api: Api, *scopes: str) -> str:
    return asyncio.run(_fresh_key(api, list(scopes) or ["admin"]))


def test_no_credentials_says_how_to_send_them(embedded_api: Api) -> None:
    with embedded_api.client() as client:
        response = client.post("/api/v1/search", json={"query": "x"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert "X-API-Key" in response.json()["error"]["message"]


def test_tokens_over_http_scopes_and_bad_tokens(embedded_api: Api) -> None:
    api = embedded_api
    with api.client() as client:
        good = client.post("/api/v1/embeddings/generate", json={"text": "hi"}, headers={"Authorization": f"Bearer {api.token()}"})
        narrow = client.post("/api/v1/embeddings/generate", json={"text": "hi"},
                             headers={"Authorization": f"Bearer {api.token(scopes=['search'])}"})
        expired = client.post("/api/v1/embeddings/generate", json={"text": "hi"},
                              headers={"Authorization": f"Bearer {api.token(ttl_s=-120)}"})
        garbage = client.get("/api/v1/metrics/system", headers={"Authorization": "Bearer abc.def.ghi"})
        unknown_key = client.get("/api/v1/metrics/system", headers={"X-API-Key": "ctd_000000000000_" + "a" * 43})
        wrong_scope = client.get("/api/v1/metrics/system", headers=api.headers("embed"))
    assert good.status_code == 200
    assert narrow.status_code == 403 and "'embeddings' scope" in narrow.json()["error"]["message"]
    assert expired.status_code == 401 and expired.json()["error"]["message"] == "the token has expired"
    assert garbage.status_code == 401 and unknown_key.status_code == 401 and wrong_scope.status_code == 403


def test_an_api_key_is_also_a_bearer_credential(embedded_api: Api) -> None:
    """What Prometheus sends (its scrape config has `authorization`, not custom headers)."""
    api = embedded_api
    with api.client() as client:
        scraped = client.get("/metrics", headers={"Authorization": f"Bearer {api.keys['reader']}"})
        revoked_like = client.get("/metrics", headers={"Authorization": "Bearer ctd_000000000000_" + "a" * 43})
        both = client.get("/metrics", headers={"Authorization": f"Bearer {api.keys['reader']}", "X-API-Key": api.keys["reader"]})
    assert scraped.status_code == 200 and "citadel_http_requests_total" in scraped.text
    assert revoked_like.status_code == 401 and both.status_code == 401


def test_secure_headers_on_every_response_and_one_error_shape(embedded_api: Api) -> None:
    with embedded_api.client() as client:
        responses = [
            client.get("/api/v1/health"),
            client.get("/api/v1/no-such-route"),
            client.post("/api/v1/search", json={"query": "x"}),
            client.post("/api/v1/embeddings/generate", json={"text": "x", "extra": 1}, headers=embedded_api.headers()),
        ]
    for response in responses:
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
        assert headers["content-security-policy"].startswith("default-src 'none'")
        assert headers["referrer-policy"] == "no-referrer" and headers["cross-origin-resource-policy"] == "same-origin"
        assert headers["cross-origin-opener-policy"] == "same-origin" and headers["cache-control"] == "no-store"
        assert "strict-transport-security" not in headers  # plain HTTP: HSTS belongs to TLS
        assert "x-xss-protection" not in headers and "server" not in headers
        assert len(headers["x-request-id"]) == 32
    for response in responses[1:]:
        body = response.json()
        assert body["success"] is False and set(body["error"]) >= {"code", "message"}
        assert body["request_id"] == response.headers["x-request-id"]
    assert responses[1].status_code == 404
    assert responses[3].status_code == 422 and responses[3].json()["error"]["details"][0]["location"] == "body.extra"


def test_a_request_id_is_echoed_when_sane(embedded_api: Api) -> None:
    with embedded_api.client() as client:
        echoed = client.get("/api/v1/health", headers={"X-Request-ID": "trace-42.a"})
        replaced = client.get("/api/v1/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert echoed.headers["x-request-id"] == "trace-42.a"
    assert replaced.headers["x-request-id"] != "bad id\twith spaces" and len(replaced.headers["x-request-id"]) == 32


def test_bodies_too_large_or_not_json_are_refused_before_the_route(secured: tuple[Api, ApiProcess]) -> None:
    api, _ = secured
    with api.client(headers=api.headers("embed")) as client:
        large = client.post("/api/v1/embeddings/generate", json={"text": "a" * 5000})
        chunked = client.post("/api/v1/embeddings/generate", content=iter([b'{"text": "', b"a" * 5000, b'"}']),
                              headers={"content-type": "application/json"})
        form = client.post("/api/v1/embeddings/generate", content=b"text=hello",
                           headers={"content-type": "application/x-www-form-urlencoded"})
        invalid = client.post("/api/v1/embeddings/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert large.status_code == 413 and "CITADEL_API_MAX_BODY_BYTES" in large.json()["error"]["message"]
    assert chunked.status_code == 413
    assert form.status_code == 415 and form.json()["error"]["code"] == "unsupported_media_type"
    assert invalid.status_code == 422


def test_cors_allows_the_listed_origin_only(secured: tuple[Api, ApiProcess], embedded_api: Api) -> None:
    api, _ = secured
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key,content-type"}
    with api.client() as client:
        allowed = client.options("/api/v1/search", headers={"Origin": ORIGIN, **preflight})
        refused = client.options("/api/v1/search", headers={"Origin": "https://evil.example", **preflight})
        simple = client.get("/api/v1/health", headers={"Origin": ORIGIN})
        other = client.get("/api/v1/health", headers={"Origin": "https://evil.example"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    assert simple.headers["access-control-allow-origin"] == ORIGIN and "access-control-allow-origin" not in other.headers
    with embedded_api.client() as client:  # the default: no cross-origin access at all
        default = client.options("/api/v1/search", headers={"Origin": ORIGIN, **preflight})
    assert "access-control-allow-origin" not in default.headers


def test_refusals_before_the_body_carry_cors_for_the_listed_origin(secured: tuple[Api, ApiProcess]) -> None:
    """A 401, 429 or 413 the service answers before reading a body is readable to an allowed page, as its other answers are."""
    api, _ = secured
    with api.client(headers={"X-Forwarded-For": "203.0.113.77", "Origin": ORIGIN}) as client:  # a budget of its own
        responses = [client.post("/api/v1/search", json={"query": "x"}) for _ in range(13)]
        large = client.post("/api/v1/search", json={"query": "a" * 5000}, headers={"X-API-Key": "ctd_x"})
        other = client.post("/api/v1/search", json={"query": "x"}, headers={"Origin": "https://evil.example"})
    assert [r.status_code for r in responses] == [401] * 12 + [429] and large.status_code == 413
    for response in [responses[0], responses[-1], large]:
        assert response.headers["access-control-allow-origin"] == ORIGIN, response.headers
        assert response.headers["access-control-allow-credentials"] == "true"
        assert "retry-after" in response.headers["access-control-expose-headers"].lower()
        assert response.headers["x-content-type-options"] == "nosniff" and len(response.headers["x-request-id"]) == 32
    assert int(responses[-1].headers["retry-after"]) >= 1
    assert other.status_code == 429 and "access-control-allow-origin" not in other.headers


def test_rate_limits_are_shared_by_two_processes_with_the_ietf_fields(secured: tuple[Api, ApiProcess]) -> None:
    first, second = secured
    key = fresh_key(first, "metrics")
    codes = []
    last: httpx.Response | None = None
    for index in range(16):
        url = (first.url if index % 2 == 0 else second.url) + "/api/v1/metrics/system"
        last = httpx.get(url, headers={"X-API-Key": key}, timeout=30)
        codes.append(last.status_code)
    assert codes.count(200) == 12 and codes[12:] == [429] * 4, codes
    assert last is not None
    assert int(last.headers["retry-after"]) >= 1
    assert last.headers["ratelimit"].startswith('"minute";r=0;t=')
    assert '"minute";q=12;w=60' in last.headers["ratelimit-policy"]
    assert last.json()["error"]["code"] == "rate_limited"


def test_forwarded_for_counts_only_from_a_trusted_proxy(secured: tuple[Api, ApiProcess], embedded_api: Api) -> None:
    api, _ = secured
    # Behind the trusted proxy (the loopback here) each forwarded client has its own budget.
    for n in range(3):
        address = f"203.0.113.{n + 1}"
        with api.client(headers={"X-Forwarded-For": f"{address}"}) as client:
            codes = [client.post("/api/v1/search", json={"query": "x"}).status_code for _ in range(12)]
        assert codes == [401] * 12, (address, codes)
    # A spoofed hop in front of the real one does not change who the client is.
    spoofed = [
        httpx.post(f"{api.url}/api/v1/search", json={"query": "x"}, headers={"X-Forwarded-For": f"10.9.9.{i}, 203.0.113.200"}).status_code
        for i in range(14)
    ]
    assert spoofed[:12] == [401] * 12 and spoofed[12:] == [429, 429]
    # The exempt address is never limited.
    exempt = [
        httpx.post(f"{api.url}/api/v1/search", json={"query": "x"}, headers={"X-Forwarded-For": "198.51.100.7"}).status_code
        for _ in range(14)
    ]
    assert exempt == [401] * 14


def test_admin_routes_follow_the_admin_networks(secured: tuple[Api, ApiProcess]) -> None:
    api, _ = secured
    key = fresh_key(api, "admin")
    with api.client(headers={"X-API-Key": key}) as client:
        assert client.get("/api/v1/admin/keys").status_code == 200
        outside = client.get("/api/v1/admin/keys", headers={"X-Forwarded-For": "203.0.113.50"})
        denied = client.get("/api/v1/admin/keys", headers={"X-Forwarded-For": "192.0.2.10"})
        not_admin = client.get("/api/v1/metrics/system", headers={"X-Forwarded-For": "203.0.113.50"})
    assert outside.status_code == 403 and "CITADEL_API_ADMIN_ALLOW" in outside.json()["error"]["message"]
    assert denied.status_code == 403 and not_admin.status_code == 200


def test_no_secret_reaches_the_log(secured: tuple[Api, ApiProcess]) -> None:
    api, second = secured
    key = fresh_key(api, "embeddings")
    with api.client() as client:
        client.post("/api/v1/embeddings/generate", json={"text": "x"}, headers={"X-API-Key": key})
        client.post("/api/v1/embeddings/generate", json={"text": "x"}, headers={"X-API-Key": key + "x"})
        client.post("/api/v1/embeddings/generate", json={"text": "x"}, headers={"Authorization": f"Bearer {api.token()}"})
    logs = api.process.log(200_000) + second.log(200_000)
    assert key not in logs and api.token()[:40] not in logs and "test-secret-" not in logs


def test_an_api_without_any_credential_refuses_and_says_how_to_create_one(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data")
    env.pop("CITADEL_JWT_SECRET")
    with ApiProcess(env, tmp_path) as api:
        response = httpx.post(f"{api.url}/api/v1/search", json={"query": "x"})
    assert response.status_code == 401 and "citadel apikey create" in response.json()["error"]["message"]
