"""Poisoned input against real ``citadel api`` processes: a text one caller poisons must not fail
another caller's embeddings, valid input must never be a 500 (floats and NaN in filters, NUL bytes
in what reaches Postgres), and a Redis outage must not switch the rate limits off."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Api, start_api
from tests.support.embedding_server import EmbeddingServer

LONE_SURROGATE = "\ud800"


def post_raw(client: httpx.Client, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    """``body`` as Python's json writes it: lone surrogates escaped (``\\ud800``) and NaN/Infinity
    as bare words, which Python's own parser on the server reads back."""
    return client.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, **kwargs)


def assert_refused(response: httpx.Response, status: int, location: str | None = None) -> dict[str, Any]:
    """A refusal of the one error shape; with ``location``, one of its details names it."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False and body["error"]["message"]
    if location is not None:
        assert any(d["location"] == location for d in body["error"]["details"]), body
    return body


@pytest.fixture(scope="module")
def slow_ollama_api(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Iterator[tuple[Api, EmbeddingServer]]:
    """An API in front of one Ollama-protocol server that embeds one request at a time, slowly
    enough that concurrent requests share micro-batches."""
    server = EmbeddingServer().start()
    api = start_api("ollama", tmp_path_factory.mktemp("api-poisoned"), prefect_api_url,
                    CITADEL_EMBEDDER="ollama", CITADEL_OLLAMA_URLS=server.url)
    yield api, server
    api.process.stop()
    server.stop()


async def _storm(api: Api, route: str, poisoned: dict[str, Any]) -> tuple[list[httpx.Response], httpx.Response]:
    """15 concurrent valid requests of the ``embed`` key with a poisoned one of the ``admin`` key among them."""
    tag = uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=api.url, timeout=60, limits=httpx.Limits(max_connections=50)) as client:
        def send(key: str, body: dict[str, Any]) -> Any:
            return client.post(f"/api/v1/embeddings/{route}", content=json.dumps(body).encode(),
                               headers={**api.headers(key), "Content-Type": "application/json"})

        def valid(i: int) -> dict[str, Any]:
            if route == "batch":
                return {"texts": [f"valid {i} {tag}", f"also valid {i} {tag}"], "cache_enabled": False}
            return {"text": f"valid {i} {tag}", "cache_enabled": False}

        responses = await asyncio.gather(*(send("embed", valid(i)) for i in range(7)), send("admin", poisoned),
                                         *(send("embed", valid(i)) for i in range(7, 15)))
    return [*responses[:7], *responses[8:]], responses[7]


@pytest.mark.parametrize("route", ["batch", "generate"])
def test_a_lone_surrogate_fails_only_its_own_request(slow_ollama_api: tuple[Api, EmbeddingServer], route: str) -> None:
    api, server = slow_ollama_api
    server.reset()
    server.serial(0.05, 0.0005)
    poisoned_text = f"{LONE_SURROGATE} and the rest {uuid.uuid4()}"
    if route == "batch":
        poisoned: dict[str, Any] = {"texts": [f"fine {uuid.uuid4()}", poisoned_text], "cache_enabled": False}
        where = "body.texts.1"
    else:
        poisoned, where = {"text": poisoned_text, "cache_enabled": False}, "body.text"
    valid, refused = asyncio.run(_storm(api, route, poisoned))
    assert [r.status_code for r in valid] == [200] * 15, [r.text for r in valid if r.status_code != 200][:2]
    body = assert_refused(refused, 422, where)
    detail = next(d for d in body["error"]["details"] if d["location"] == where)
    assert "surrogate" in detail["message"] and "UTF-8" in detail["message"]
    assert "Traceback" not in api.process.log(200_000)


def test_a_shared_batch_the_backend_refuses_is_retried_request_by_request(slow_ollama_api: tuple[Api, EmbeddingServer]) -> None:
    """Any failure that may lie in the texts, not only a surrogate: the backend refuses the shared
    batch once (400), each request's texts are embedded on their own, and every caller is answered."""
    api, server = slow_ollama_api
    server.reset()
    server.serial(1.0, 0.0)  # a second for the 15 to gather behind the blocker, however loaded the machine
    tag = uuid.uuid4().hex

    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=api.url, headers=api.headers("embed"), timeout=60) as client:
            def send(i: int) -> Any:
                return client.post("/api/v1/embeddings/batch", json={"texts": [f"t {i} {tag}", f"u {i} {tag}"], "cache_enabled": False})

            blocker = asyncio.create_task(send(-1))  # in flight alone while the others gather
            deadline = time.monotonic() + 30
            while server.requests["/api/embed"] < 1 and time.monotonic() < deadline:  # it reached the server
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # and the server has looked for a fault to answer it with
            server.fail_next(1, 400, path="/api/embed")
            responses = await asyncio.gather(*(send(i) for i in range(15)))
            return [await blocker, *responses]

    responses = asyncio.run(storm())
    assert [r.status_code for r in responses] == [200] * 16, [r.text for r in responses if r.status_code != 200][:2]
    # The blocker, the refused batch of the 15 (not recorded), then each request's two texts alone.
    assert server.requests["/api/embed"] == 1 + 1 + 15 and server.batch_sizes == [2] * 16, (server.batch_sizes, server.requests)


def test_every_text_route_refuses_a_lone_surrogate(api: Api) -> None:
    with api.client(headers=api.headers()) as client:
        search = post_raw(client, "/api/v1/search", {"query": f"find {LONE_SURROGATE}"})
        model = post_raw(client, "/api/v1/embeddings/generate", {"text": "fine", "model": LONE_SURROGATE})
        filtered = post_raw(client, "/api/v1/search", {"query": "find", "filter": {"source": LONE_SURROGATE}})
        key = post_raw(client, "/api/v1/admin/keys", {"name": f"name {LONE_SURROGATE}", "scopes": ["search"]})
        workflow = post_raw(client, "/api/v1/orchestration/workflow", {"workflow_id": "poisoned", "steps": [
            {"step_id": "embed", "type": "embedding", "parameters": {"text": f"a {LONE_SURROGATE}"}}]})
        records = post_raw(client, "/api/v1/orchestration/workflow", {"workflow_id": "poisoned", "steps": [
            {"step_id": "index", "type": "index", "parameters": {"collection": "poisoned", "source": [
                {"id": "one", "text": "fine", "metadata": {f"key {LONE_SURROGATE}": 1}}]}}]})
    assert_refused(workflow, 422, "body.steps.0.parameters.text")
    assert_refused(records, 422, "body.steps.0.parameters.source.0.metadata.key \\ud800")
    assert_refused(search, 422, "body.query")
    assert_refused(model, 422, "body.model")
    assert_refused(filtered, 422, "body.filter.source")
    assert_refused(key, 422, "body.name")


def _wait_final(api: Api, task_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with api.client(headers=api.headers()) as client:
        while time.monotonic() < deadline:
            status: dict[str, Any] = client.get(f"/api/v1/orchestration/workflow/{task_id}/status").json()
            if status["status"] in ("Completed", "Failed", "Crashed", "Cancelled"):
                return status
            time.sleep(0.3)
    raise AssertionError(f"workflow run {task_id} did not finish within {timeout}s")


@pytest.fixture(scope="module")
def measured_collections() -> dict[str, str]:
    return {}


def measured(api: Api, made: dict[str, str]) -> str:
    """A collection (one per API process) of two documents whose metadata holds a float, an integer and a flag,
    and one whose metadata holds arrays."""
    if api.name in made:
        return made[api.name]
    collection = f"poison_{uuid.uuid4().hex[:10]}"
    records = [
        {"id": "light", "text": "A feather drifts on the wind.", "metadata": {"weight": 1.5, "count": 2, "soft": True}},
        {"id": "heavy", "text": "An anvil sinks to the floor.", "metadata": {"weight": 40.25, "count": 3, "soft": False}},
        {"id": "kit", "text": "A box of parts falls open.",
         "metadata": {"tags": ["red", "blue"], "parts": [{"name": "bolt"}, {"name": "nut"}]}},
    ]
    workflow = {"workflow_id": "measured", "steps": [
        {"step_id": "index", "type": "index", "parameters": {"collection": collection, "source": records}}]}
    with api.client(headers=api.headers()) as client:
        submitted = client.post("/api/v1/orchestration/workflow", json=workflow)
    assert submitted.status_code in (200, 201, 202), submitted.text
    assert _wait_final(api, submitted.json()["task_id"])["status"] == "Completed"
    made[api.name] = collection
    return collection


def test_filters_on_floats_match_and_nan_is_refused(api: Api, measured_collections: dict[str, str]) -> None:
    collection = measured(api, measured_collections)

    def search(client: httpx.Client, filters: dict[str, Any]) -> httpx.Response:
        return post_raw(client, "/api/v1/search", {"query": "something falls", "collection": collection, "filter": filters})

    with api.client(headers=api.headers("reader")) as client:
        light = search(client, {"metadata.weight": 1.5})
        none = search(client, {"metadata.weight": 1.25})
        whole = search(client, {"metadata.count": 3.0})  # a float equal to an integer payload matches it
        mixed = search(client, {"metadata.weight": 40.25, "metadata.soft": False, "metadata.count": 3})
        refused = {name: search(client, {"metadata.weight": value}) for name, value in
                   [("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))]}
        threshold = post_raw(client, "/api/v1/search", {"query": "something", "collection": collection, "threshold": float("nan")})
        bad_key = search(client, {"metadata[": 1})
    assert light.status_code == 200, light.text
    assert [hit["document_id"] for hit in light.json()["hits"]] == ["light"]
    assert none.status_code == 200 and none.json()["hits"] == []
    assert [hit["document_id"] for hit in whole.json()["hits"]] == ["heavy"]
    assert [hit["document_id"] for hit in mixed.json()["hits"]] == ["heavy"]
    for response in refused.values():
        body = assert_refused(response, 422, "body.filter.metadata.weight")
        assert "finite" in json.dumps(body)
    assert_refused(threshold, 422, "body.threshold")
    assert_refused(bad_key, 422)
    assert " 500 " not in api.process.log(200_000)


def test_filters_on_integers_beyond_64_bits_are_refused_and_arrays_are_addressed(api: Api, measured_collections: dict[str, str]) -> None:
    collection = measured(api, measured_collections)

    def search(client: httpx.Client, filters: dict[str, Any]) -> httpx.Response:
        return post_raw(client, "/api/v1/search", {"query": "something falls", "collection": collection, "filter": filters})

    with api.client(headers=api.headers("reader")) as client:
        big = {value: search(client, {"metadata.count": value}) for value in [10**20, 2**63, -(2**63) - 1, 1e20]}
        largest = search(client, {"metadata.count": 2**63 - 1})
        tagged = search(client, {"metadata.tags[]": "blue"})
        part = search(client, {"metadata.parts[].name": "nut", "metadata.tags[]": "red"})
        no_part = search(client, {"metadata.parts[].name": "washer"})
        bad_array = search(client, {"metadata.parts[0].name": "nut"})
    for value, response in big.items():
        body = assert_refused(response, 422, "body.filter.metadata.count")
        assert "64-bit" in json.dumps(body), value
    assert largest.status_code == 200 and largest.json()["hits"] == []
    assert [hit["document_id"] for hit in tagged.json()["hits"]] == ["kit"], tagged.text
    assert [hit["document_id"] for hit in part.json()["hits"]] == ["kit"], part.text
    assert no_part.status_code == 200 and no_part.json()["hits"] == []
    assert_refused(bad_array, 422)
    assert " 500 " not in api.process.log(200_000)


def test_nul_bytes_never_reach_the_registry(api: Api) -> None:
    with api.client(headers=api.headers()) as client:
        created = client.post("/api/v1/admin/keys", json={"name": "before\x00after", "scopes": ["search"]})
        newline = client.post("/api/v1/admin/keys", json={"name": "two\nlines", "scopes": ["search"]})
        blank = client.post("/api/v1/admin/keys", json={"name": "   ", "scopes": ["search"]})
        revoked = client.delete("/api/v1/admin/keys/abc%00def")
        collection = client.post("/api/v1/search", json={"query": "anything", "collection": "a\x00b"})
        fine = client.post("/api/v1/admin/keys", json={"name": f"printable ünïcode {uuid.uuid4().hex[:6]}", "scopes": ["search"]})
    body = assert_refused(created, 422, "body.name")
    assert "control character" in json.dumps(body)
    assert_refused(newline, 422, "body.name")
    assert_refused(blank, 422, "body.name")
    assert_refused(revoked, 404)
    assert_refused(collection, 400)
    assert fine.status_code == 201, fine.text
    assert " 500 " not in api.process.log(200_000)


def test_the_openapi_document_says_what_the_server_enforces(api: Api) -> None:
    schema = httpx.get(f"{api.url}/api/v1/openapi.json").json()

    def parameter(path: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = next(p for p in schema["paths"]["/api/v1" + path]["get"]["parameters"] if p["name"] == name)["schema"]
        return found

    assert parameter("/metrics/embeddings", "time_range")["enum"] == ["5m", "15m", "1h", "6h", "12h", "24h", "7d"]
    assert parameter("/ui/charts/embedding-performance", "time_range")["enum"][0] == "5m"
    assert parameter("/ui/dashboard/config", "dashboard_type")["enum"] == ["main", "embeddings", "workflows"]
    components = schema["components"]["schemas"]
    assert "pattern" in components["KeyCreateRequest"]["properties"]["name"]
    revoke = schema["paths"]["/api/v1/admin/keys/{key_id}"]["delete"]["parameters"]
    assert next(p for p in revoke if p["name"] == "key_id")["schema"]["pattern"] == "^[0-9a-f]{12}$"
    assert "pattern" in components["SearchRequest"]["properties"]["collection"]
    assert "propertyNames" in json.dumps(components["SearchRequest"]["properties"]["filter"])


def refused_redis_url() -> str:
    """A Redis URL on a loopback port nothing listens on: every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


@pytest.mark.parametrize("on_redis_down", ["default", "closed"])
def test_rate_limits_hold_while_redis_refuses_connections(tmp_path: Path, prefect_api_url: str, on_redis_down: str) -> None:
    extra = {"CITADEL_API_RATE_LIMITS": "4/minute"}
    if on_redis_down != "default":
        extra["CITADEL_RATE_LIMIT_ON_REDIS_DOWN"] = on_redis_down
    api = start_api("redis-down", tmp_path, prefect_api_url, **extra)
    api.process.stop()  # keys are made; now the same service with a Redis that refuses every connection
    api.process.env["CITADEL_REDIS_URL"] = refused_redis_url()
    api.process.start()
    try:
        with api.client() as client:
            guesses = [client.get("/api/v1/metrics/system", headers={"X-API-Key": f"ctd_000000000000_{i:043d}"}).status_code
                       for i in range(8)]
            served = [client.get("/api/v1/metrics/system", headers=api.headers("reader")) for _ in range(6)]
        log = api.process.log(200_000)
    finally:
        api.process.stop()
    codes = [r.status_code for r in served]
    if on_redis_down == "closed":
        assert set(guesses) == {429} and set(codes) == {429}
        assert int(served[0].headers["Retry-After"]) >= 1
    else:  # each worker limits on its own: four guesses, then refusals; the key's own budget likewise
        assert guesses == [401] * 4 + [429] * 4, guesses
        assert codes == [200] * 4 + [429] * 2, codes
        assert served[-1].headers["RateLimit"].startswith('"minute";r=0;')
    assert "CITADEL_RATE_LIMIT_ON_REDIS_DOWN" in log
