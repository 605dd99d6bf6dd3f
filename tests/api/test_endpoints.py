"""Every endpoint with the specification's shapes, on the embedded defaults and on Redis + Postgres."""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np

from tests.api.conftest import Api


def wait_final(api: Api, task_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    with api.client(headers=api.headers()) as client:
        while True:
            body = client.get(f"/api/v1/orchestration/workflow/{task_id}/status").json()
            if body["status"] in ("Completed", "Failed", "Cancelled", "Crashed") or time.monotonic() > deadline:
                return body
            time.sleep(0.3)


def test_health_and_liveness_touch_nothing_and_need_no_credentials(api: Api) -> None:
    with api.client() as client:
        for path in ("/api/v1/health", "/livez"):
            body = client.get(path).json()
            assert body["status"] == "healthy" and body["version"] and body["timestamp"].endswith("+00:00")


def test_detailed_health_reports_what_each_dependency_is(api: Api) -> None:
    with api.client() as client:
        response = client.get("/api/v1/health/detailed")
        ready = client.get("/readyz")
    assert response.status_code == 200 and ready.status_code == 200
    deps = response.json()["dependencies"]
    assert set(deps) == {"redis", "qdrant", "postgres", "prefect", "embedder"}
    assert response.json()["status"] == "healthy"
    assert deps["qdrant"]["status"] == "embedded" and deps["embedder"]["status"] == "embedded"
    assert deps["prefect"]["status"] == "up"  # the session's Prefect server
    if api.name == "embedded":
        assert deps["redis"]["status"] == "embedded" and deps["postgres"]["status"] == "embedded"
    else:
        assert deps["redis"]["status"] == "up" and deps["postgres"]["status"] == "up"
    assert all(dep["latency_ms"] >= 0 for dep in deps.values())


def test_generate_then_the_same_text_comes_from_the_cache(api: Api) -> None:
    text = f"an embedding request {uuid.uuid4()}"
    with api.client(headers=api.headers("embed")) as client:
        first = client.post("/api/v1/embeddings/generate", json={"text": text}).json()
        second = client.post("/api/v1/embeddings/generate", json={"text": text, "cache_enabled": True}).json()
        bypass = client.post("/api/v1/embeddings/generate", json={"text": text, "cache_enabled": False}).json()
    assert first["success"] is True and first["cached"] is False
    assert first["dimensions"] == len(first["embedding"]) == 256 and first["model"] == "wordllama-l2_supercat-256d"
    assert second["cached"] is True and bypass["cached"] is False
    assert np.allclose(first["embedding"], second["embedding"]) and np.allclose(first["embedding"], bypass["embedding"])
    assert first["duration_ms"] >= 0


def test_batch_keeps_order_and_counts_what_was_cached(api: Api) -> None:
    known = f"known {uuid.uuid4()}"
    texts = [f"text {i} {uuid.uuid4()}" for i in range(3)]
    with api.client(headers=api.headers("embed")) as client:
        single = client.post("/api/v1/embeddings/generate", json={"text": known}).json()
        body = client.post("/api/v1/embeddings/batch", json={"texts": [*texts, known, texts[0]], "batch_size": 2}).json()
    assert body["success"] is True and len(body["embeddings"]) == 5 and body["dimensions"] == 256
    assert body["cached_count"] == 1
    assert np.allclose(body["embeddings"][3], single["embedding"])
    assert np.allclose(body["embeddings"][0], body["embeddings"][4])
    assert not np.allclose(body["embeddings"][0], body["embeddings"][1])


def test_an_unknown_model_is_400_naming_the_served_ones(api: Api) -> None:
    with api.client(headers=api.headers("embed")) as client:
        response = client.post("/api/v1/embeddings/generate", json={"text": "x", "model": "invalid-model"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unknown_model" and "wordllama-l2_supercat-256d" in error["message"]
    assert error["details"]["models"] == ["wordllama-l2_supercat-256d"]


def test_bounds_on_texts_are_enforced_with_clear_errors(api: Api) -> None:
    with api.client(headers=api.headers("embed")) as client:
        too_long = client.post("/api/v1/embeddings/generate", json={"text": "a" * 32_001})
        too_many = client.post("/api/v1/embeddings/batch", json={"texts": ["a"] * 257})
        blank = client.post("/api/v1/embeddings/generate", json={"text": "   "})
        empty = client.post("/api/v1/embeddings/batch", json={"texts": []})
    assert too_long.status_code == 400 and "CITADEL_API_MAX_TEXT_CHARS" in too_long.json()["error"]["message"]
    assert too_many.status_code == 400 and "CITADEL_API_MAX_BATCH_TEXTS" in too_many.json()["error"]["message"]
    assert blank.status_code == 400 and blank.json()["error"]["code"] == "empty_text"
    assert empty.status_code == 422 and empty.json()["error"]["details"][0]["location"] == "body.texts"


def test_a_workflow_indexes_then_search_finds_it_over_http(api: Api) -> None:
    collection = f"api_{uuid.uuid4().hex[:10]}"
    workflow = {
        "workflow_id": "api-index",
        "steps": [
            {"step_id": "index", "type": "index", "parameters": {"collection": collection, "source": [
                {"id": "fox", "text": "The quick brown fox jumps over the lazy dog."},
                {"id": "tea", "text": "Green tea is brewed at eighty degrees."}]}},
            {"step_id": "find", "type": "search", "depends_on": ["index"], "parameters": {"query": "brown fox", "collection": collection}},
        ],
    }
    with api.client(headers=api.headers()) as client:
        submitted = client.post("/api/v1/orchestration/workflow", json=workflow).json()
        assert submitted["success"] is True and submitted["runs_in"] == "api"
        assert submitted["status_url"] == f"/api/v1/orchestration/workflow/{submitted['task_id']}/status"
        status = wait_final(api, submitted["task_id"])
        assert status["status"] == "Completed", status
        assert status["steps"]["index"]["output"]["added"] == 2
        assert status["steps"]["find"]["output"]["hits"][0]["document_id"] == "fox"
        found = client.post("/api/v1/search", json={"query": "brown fox", "collection": collection, "limit": 1}).json()
        listed = client.get("/api/v1/orchestration/workflows", params={"limit": 50}).json()
    assert found["success"] is True and [hit["document_id"] for hit in found["hits"]] == ["fox"]
    assert found["hits"][0]["text"].startswith("The quick brown fox") and 0 < found["hits"][0]["score"] <= 1
    assert submitted["task_id"] in [run["task_id"] for run in listed["workflows"]]


def test_search_by_document_gives_each_document_once(api: Api) -> None:
    """``group_by: document`` over HTTP and ``by_document`` in a workflow's search step: a long
    document whose chunks all match comes once, by its best chunk, and ``limit`` counts documents."""
    collection = f"docs_{uuid.uuid4().hex[:10]}"
    long_text = " ".join(f"Harbour tide log entry {n} of {collection}: the harbour tide rose at dawn." for n in range(120))
    workflow = {"workflow_id": "by-document", "steps": [
        {"step_id": "index", "type": "index", "parameters": {"collection": collection, "source": [
            {"id": "log", "text": long_text}, {"id": "note", "text": "A note on the harbour tide."}]}},
        {"step_id": "find", "type": "search", "depends_on": ["index"],
         "parameters": {"query": "harbour tide", "collection": collection, "limit": 2, "by_document": True}},
        {"step_id": "words", "type": "search", "depends_on": ["index"],
         "parameters": {"query": "note", "collection": collection, "mode": "sparse"}},
    ]}
    with api.client(headers=api.headers()) as client:
        submitted = client.post("/api/v1/orchestration/workflow", json=workflow).json()
        status = wait_final(api, submitted["task_id"])
        assert status["status"] == "Completed", status
        query = {"query": "harbour tide", "collection": collection, "limit": 2}
        chunks = client.post("/api/v1/search", json=query).json()["hits"]
        documents = client.post("/api/v1/search", json={**query, "group_by": "document"}).json()["hits"]
        refused = client.post("/api/v1/search", json={**query, "group_by": "page"})
        modes = {mode: client.post("/api/v1/search", json={"query": "note", "collection": collection, "mode": mode}).json()
                 for mode in ("dense", "sparse", "hybrid")}
        bad_mode = client.post("/api/v1/search", json={**query, "mode": "fuzzy"})
        default = client.post("/api/v1/search", json=query).json()
    assert default["mode"] == "hybrid" and all(found["mode"] == mode for mode, found in modes.items())
    assert [hit["document_id"] for hit in modes["sparse"]["hits"]] == ["note"]  # only the note has the word
    assert len(modes["dense"]["hits"]) > 1  # the dense leg ranks chunks without the word too
    assert bad_mode.status_code == 422 and "mode" in bad_mode.text
    words = status["steps"]["words"]["output"]
    assert words["mode"] == "sparse" and [hit["document_id"] for hit in words["hits"]] == ["note"]
    indexed = status["steps"]["index"]["output"]
    assert indexed["chunks_embedded"] + indexed["cache_hits"] > 2, "the log is several chunks (from the cache on a shared Redis)"
    assert [hit["document_id"] for hit in chunks] == ["log", "log"]
    assert sorted(hit["document_id"] for hit in documents) == ["log", "note"]
    assert sorted(hit["document_id"] for hit in status["steps"]["find"]["output"]["hits"]) == ["log", "note"]
    assert refused.status_code == 422


def test_search_reads_a_blue_green_collection_through_its_alias(api: Api) -> None:
    """A workflow builds two blue-green versions; /api/v1/search on the alias reads the live one."""
    collection = f"bg_{uuid.uuid4().hex[:10]}"

    def build(text: str) -> dict[str, Any]:
        workflow = {"workflow_id": "api-blue-green", "steps": [{"step_id": "index", "type": "index", "parameters": {
            "collection": collection, "blue_green": True, "source": [{"id": "note", "text": text}]}}]}
        with api.client(headers=api.headers()) as client:
            submitted = client.post("/api/v1/orchestration/workflow", json=workflow).json()
        status = wait_final(api, submitted["task_id"])
        assert status["status"] == "Completed", status
        output: dict[str, Any] = status["steps"]["index"]["output"]
        return output

    assert build("The lighthouse keeper logs every passing ship.")["switch"]["live"] == f"{collection}__v1"
    assert build("The orchard blooms with apple blossoms in spring.")["switch"]["previous"] == f"{collection}__v1"
    with api.client(headers=api.headers("reader")) as client:
        found = client.post("/api/v1/search", json={"query": "apple blossoms", "collection": collection, "limit": 1})
    assert found.status_code == 200, found.text
    assert found.json()["collection"] == collection and "orchard" in found.json()["hits"][0]["text"]


def test_search_of_an_unknown_collection_and_a_filter(api: Api) -> None:
    with api.client(headers=api.headers("reader")) as client:
        missing = client.post("/api/v1/search", json={"query": "anything", "collection": f"none_{uuid.uuid4().hex[:8]}"})
        bad_name = client.post("/api/v1/search", json={"query": "anything", "collection": "../etc"})
    assert missing.status_code == 404 and "does not exist" in missing.json()["error"]["message"]
    assert bad_name.status_code == 400


def test_an_invalid_workflow_is_400_with_every_problem_and_where(api: Api) -> None:
    workflow = {"workflow_id": "broken", "steps": [
        {"step_id": "a", "type": "embedding"},
        {"step_id": "b", "type": "no-such-type", "depends_on": ["missing"]},
    ]}
    with api.client(headers=api.headers("workflows")) as client:
        response = client.post("/api/v1/orchestration/workflow", json=workflow)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_workflow"
    locations = {problem["location"] for problem in error["details"]}
    assert {"steps[0].parameters", "steps[1].type", "steps[1].depends_on[0]"} <= locations, error["details"]


def test_status_of_an_unknown_run_is_404_and_cancel_stops_a_running_one(api: Api) -> None:
    with api.client(headers=api.headers("workflows")) as client:
        assert client.get(f"/api/v1/orchestration/workflow/{uuid.uuid4()}/status").status_code == 404
        assert client.get("/api/v1/orchestration/workflow/not-a-uuid/status").status_code == 404
        assert client.post(f"/api/v1/orchestration/workflow/{uuid.uuid4()}/cancel").status_code == 404
        texts = [f"slow text {i} {uuid.uuid4()}" for i in range(5)]
        workflow = {"workflow_id": "to-cancel", "steps": [
            {"step_id": f"s{i}", "type": "embedding", "parameters": {"texts": texts}, "depends_on": [f"s{i-1}"] if i else []}
            for i in range(40)
        ]}
        task_id = client.post("/api/v1/orchestration/workflow", json=workflow).json()["task_id"]
        cancelled = client.post(f"/api/v1/orchestration/workflow/{task_id}/cancel").json()
    final = wait_final(api, task_id)
    assert cancelled["task_id"] == task_id
    assert final["status"] == "Cancelled", final["status"]


def test_metrics_routes_report_what_was_measured(api: Api) -> None:
    with api.client(headers=api.headers("reader")) as client:
        system = client.get("/api/v1/metrics/system").json()
        before = client.get("/api/v1/metrics/embeddings", params={"time_range": "1h"}).json()["metrics"]["api"]
        with api.client(headers=api.headers("embed")) as embed:
            embed.post("/api/v1/embeddings/batch", json={"texts": [f"m {uuid.uuid4()}", f"n {uuid.uuid4()}"]})
        after = client.get("/api/v1/metrics/embeddings", params={"time_range": "1h"}).json()
        bad = client.get("/api/v1/metrics/embeddings", params={"time_range": "3 weeks"})
    assert all(0 <= system[name] <= 100 for name in ("cpu_percent", "memory_percent", "disk_percent"))
    assert after["success"] is True and after["time_range"] == "1h"
    assert after["metrics"]["api"]["requests"] == before["requests"] + 1
    assert after["metrics"]["api"]["texts"] == before["texts"] + 2
    assert after["metrics"]["api"]["texts_embedded"] == before["texts_embedded"] + 2
    assert bad.status_code == 400 and "5m" in bad.json()["error"]["message"]


def test_dashboard_config_and_chart_series(api: Api) -> None:
    with api.client(headers=api.headers("reader")) as client:
        config = client.get("/api/v1/ui/dashboard/config", params={"dashboard_type": "main"}).json()
        chart = client.get("/api/v1/ui/charts/embedding-performance", params={"time_range": "24h"}).json()
        short = client.get("/api/v1/ui/charts/embedding-performance", params={"time_range": "5m"}).json()
        unknown = client.get("/api/v1/ui/dashboard/config", params={"dashboard_type": "nope"})
    assert config["success"] is True and {w["id"] for w in config["config"]["widgets"]} >= {"health", "embedding-performance"}
    assert chart["chart_type"] == "line" and chart["config"]["x"]["type"] == "time"
    series = {dataset["label"]: dataset["points"] for dataset in chart["data"]["datasets"]}
    assert set(series) == {"API texts per minute", "Indexing chunks per second"}
    assert all(point["y"] >= 0 for points in series.values() for point in points)
    assert len(short["data"]["datasets"]) == 2
    assert unknown.status_code == 400


def test_prometheus_exposition_uses_route_templates(api: Api) -> None:
    with api.client(headers=api.headers("reader")) as client:
        client.get(f"/api/v1/orchestration/workflow/{uuid.uuid4()}/status")  # 403 for this key: still counted
        text = client.get("/api/v1/metrics/prometheus").text
        same = client.get("/metrics")
    assert same.status_code == 200 and same.headers["content-type"].startswith("text/plain")
    assert 'citadel_http_requests_total{method="GET",route="/api/v1/orchestration/workflow/{task_id}/status",status="403"}' in text
    assert "citadel_http_request_duration_seconds_bucket" in text and "citadel_http_requests_in_flight" in text
    assert "/status\"" not in text.replace("{task_id}/status", "")  # no raw ids in labels


def test_admin_routes_manage_keys(api: Api) -> None:
    with api.client(headers=api.headers()) as client:
        created = client.post("/api/v1/admin/keys", json={"name": "made over http", "scopes": ["search"]})
        assert created.status_code == 201
        key = created.json()["key"]
        listed = client.get("/api/v1/admin/keys").json()["keys"]
        assert key["key_id"] in [k["key_id"] for k in listed] and all("key" not in k for k in listed)
        with api.client(headers={"X-API-Key": key["key"]}) as user:
            assert user.post("/api/v1/search", json={"query": "x", "collection": "none_here"}).status_code == 404
            assert client.delete(f"/api/v1/admin/keys/{key['key_id']}").json()["revoked_at"]
            assert user.post("/api/v1/search", json={"query": "x"}).status_code == 401
        assert client.delete("/api/v1/admin/keys/nope").status_code == 404
