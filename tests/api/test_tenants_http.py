"""Tenants over HTTP, on the embedded defaults and on Redis + Postgres: a key reaches the collections
of its grants and no other (one outside them answers as one that does not exist, and no figure
names it), its own rate limits apply beside the service's, an admin creates, rotates and audits
keys over the API, and every refusal is in the audit trail without the credential."""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.conftest import Api
from tests.api.test_endpoints import wait_final


@dataclass
class Tenants:
    """Two tenants' collections in one API: ``a`` (a plain and a blue-green one) and ``b``."""

    tag: str
    a: str
    a_blue_green: str
    b: str


_indexed: dict[str, Tenants] = {}


def tenants_of(api: Api) -> Tenants:
    """The collections of this API's tenants, indexed once per API process by its admin."""
    if api.name not in _indexed:
        tag = uuid.uuid4().hex[:8]
        made = Tenants(tag, f"t-a-{tag}", f"t-a-bg-{tag}", f"t-b-{tag}")
        steps = [
            {"step_id": "a", "type": "index", "parameters": {"collection": made.a, "source": [
                {"id": "fox", "text": "The quick brown fox jumps over the lazy dog."}]}},
            {"step_id": "bg", "type": "index", "parameters": {"collection": made.a_blue_green, "blue_green": True, "source": [
                {"id": "ship", "text": "The lighthouse keeper logs every passing ship."}]}},
            {"step_id": "b", "type": "index", "parameters": {"collection": made.b, "source": [
                {"id": "tea", "text": "Green tea is brewed at eighty degrees."}]}},
        ]
        with api.client(headers=api.headers()) as client:
            submitted = client.post("/api/v1/orchestration/workflow", json={"workflow_id": "tenants", "steps": steps})
        assert submitted.status_code == 200, submitted.text
        status = wait_final(api, submitted.json()["task_id"], timeout=180)
        assert status["status"] == "Completed", status
        _indexed[api.name] = made
    return _indexed[api.name]


def create_key(api: Api, scopes: list[str], **fields: Any) -> dict[str, Any]:
    """A key made over the admin route (a unique name), with its value."""
    body = {"name": f"tenant-{uuid.uuid4().hex[:8]}", "scopes": scopes, **fields}
    with api.client(headers=api.headers()) as client:
        created = client.post("/api/v1/admin/keys", json=body)
    assert created.status_code == 201, created.text
    key: dict[str, Any] = created.json()["key"]
    return key


def audit_lines(api: Api, since: dt.datetime, until: Any = None, timeout: float = 10, **params: str) -> list[dict[str, Any]]:
    """The audit trail from ``since`` (written in the background: read until ``until(lines)`` holds)."""
    deadline = time.monotonic() + timeout
    with api.client(headers=api.headers()) as client:
        while True:
            answer = client.get("/api/v1/admin/audit", params={"since": since.isoformat(), "limit": 10_000, **params})
            assert answer.status_code == 200, answer.text
            entries: list[dict[str, Any]] = answer.json()["entries"]
            if until is None or until(entries) or time.monotonic() > deadline:
                return entries
            time.sleep(0.2)


def started() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)


def test_a_collection_outside_the_grants_answers_as_one_that_does_not_exist(api: Api) -> None:
    tenants = tenants_of(api)
    since = started()
    key = create_key(api, ["search"], collections=["t-a-*"])
    missing = f"t-a-{uuid.uuid4().hex[:8]}"  # reached, and never indexed: as long as tenants.b
    assert len(missing) == len(tenants.b)
    same_id = {"X-Request-ID": f"tenant-{uuid.uuid4().hex}"}
    with api.client(headers={"X-API-Key": key["key"], **same_id}) as client:
        refused = client.post("/api/v1/search", json={"query": "green tea", "collection": tenants.b})
        absent = client.post("/api/v1/search", json={"query": "green tea", "collection": missing})
        found = client.post("/api/v1/search", json={"query": "brown fox", "collection": tenants.a})
        version = client.post("/api/v1/search", json={"query": "lighthouse", "collection": f"{tenants.a_blue_green}__v1"})
        default = client.post("/api/v1/search", json={"query": "anything"})  # the default collection: not granted
    assert refused.status_code == absent.status_code == 404
    assert refused.content.replace(tenants.b.encode(), b"NAME") == absent.content.replace(missing.encode(), b"NAME")
    assert refused.headers["content-length"] == absent.headers["content-length"]
    assert set(refused.headers) - {"ratelimit"} == set(absent.headers) - {"ratelimit"}
    assert found.status_code == 200 and found.json()["hits"][0]["document_id"] == "fox"
    assert version.status_code == 200  # a blue-green version through its collection's grant
    assert default.status_code == 404
    lines = audit_lines(api, since, lambda lines: sum(line["action"] == "search" for line in lines) >= 2, actor=f"key:{key['key_id']}")
    refusals = {(line["target"], line["outcome"], line["detail"]) for line in lines if line["action"] == "search"}
    assert (tenants.b, "refused", "outside the key's grants") in refusals
    assert any(target not in (tenants.b, missing) for target, _, _ in refusals)  # the default collection's refusal
    assert {(line["outcome"], line["detail"]) for line in lines if line["target"] == missing} == {("not_found", "no such collection")}


def test_a_refusal_takes_about_as_long_as_a_miss(api: Api) -> None:
    """Back to back, interleaved (so that the machine's load falls on both alike): the lower
    quartiles of a refusal and of a miss stay close (the quartile, as a loaded machine's stalls
    fall on the upper half of either)."""
    tenants = tenants_of(api)
    key = create_key(api, ["search"], collections=["t-a-*"])
    times: dict[str, list[float]] = {tenants.b: [], f"t-a-{uuid.uuid4().hex[:8]}": []}
    with api.client(headers={"X-API-Key": key["key"]}) as client:
        for round_ in range(61):
            for collection, spent in times.items():
                began = time.perf_counter()
                assert client.post("/api/v1/search", json={"query": "tea", "collection": collection}).status_code == 404
                if round_:  # the first round warms both paths
                    spent.append((time.perf_counter() - began) * 1000)
    refused, absent = (statistics.quantiles(spent, n=4)[0] for spent in times.values())
    # Within a factor of two: a loaded machine (the suite's other workers) moves either by a third,
    # while a refusal that skipped the miss's work would answer several times faster.
    assert 0.5 < refused / absent < 2.0, (refused, absent)


def test_the_collection_list_holds_the_reached_ones_only(api: Api) -> None:
    tenants = tenants_of(api)
    narrow = create_key(api, ["search"], collections=["t-a-*"])
    nothing = create_key(api, ["search"])
    with api.client() as client:
        seen = client.get("/api/v1/search/collections", headers={"X-API-Key": narrow["key"]}).json()["collections"]
        none = client.get("/api/v1/search/collections", headers={"X-API-Key": nothing["key"]}).json()["collections"]
        every = client.get("/api/v1/search/collections", headers=api.headers()).json()["collections"]
    names = {entry["name"] for entry in seen}
    assert {tenants.a, tenants.a_blue_green} <= names and tenants.b not in names
    assert all(name.startswith("t-a-") for name in names) and not any("__v" in name for name in names)
    assert none == []
    assert {tenants.a, tenants.a_blue_green, tenants.b} <= {entry["name"] for entry in every}


def test_figures_that_name_collections_leave_out_the_unreached(api: Api) -> None:
    tenants = tenants_of(api)
    only_b = create_key(api, ["metrics"], collections=[tenants.b])
    narrow = create_key(api, ["metrics"], collections=["t-a-*"])
    nothing = create_key(api, ["metrics"])
    with api.client() as client:
        def get(key: dict[str, Any] | None, path: str, **params: str) -> httpx.Response:
            headers = {"X-API-Key": key["key"]} if key else api.headers()
            answer = client.get(path, params=params, headers=headers)
            assert answer.status_code == 200, answer.text
            return answer

        runs = {name: get(key, "/api/v1/metrics/embeddings", time_range="7d").json()["metrics"]["indexing"]["runs"]
                for name, key in (("b", only_b), ("none", nothing), ("all", None))}
        charts = {name: get(key, "/api/v1/ui/charts/embedding-performance", time_range="7d").json()["data"]["datasets"][1]["points"]
                  for name, key in (("a", narrow), ("all", None))}
        exposition = {name: get(key, path).text for name, key, path in (
            ("a", narrow, "/api/v1/metrics/prometheus"), ("a-alias", narrow, "/metrics"), ("all", None, "/metrics"))}
    assert runs["b"] == 1 and runs["none"] == 0 and runs["all"] > 1
    assert {point["collection"] for point in charts["a"]} >= {tenants.a} and all(
        point["collection"].startswith("t-a-") for point in charts["a"])
    assert tenants.b in {point["collection"] for point in charts["all"]}
    for name in ("a", "a-alias"):
        text = exposition[name]
        assert f'collection="{tenants.a}"' in text and f'collection="{tenants.b}"' not in text
        assert "# TYPE citadel_dead_letters gauge" in text and "citadel_http_requests_total{" in text
    assert f'collection="{tenants.b}"' in exposition["all"]


def test_a_keys_own_rate_limits_apply_beside_the_services(api: Api) -> None:
    since = started()
    key = create_key(api, ["metrics"], rate_limits="2/second")
    with api.client(headers={"X-API-Key": key["key"]}) as client:
        answers = [client.get("/api/v1/metrics/system") for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[0].headers["ratelimit"].startswith('"key-second";r=1;')  # the tighter of the two budgets
    assert '"second";q=2000;w=1' in answers[0].headers["ratelimit-policy"]
    assert '"key-second";q=2;w=1' in answers[0].headers["ratelimit-policy"]
    assert answers[2].headers["ratelimit"].startswith('"key-second";r=0;') and int(answers[2].headers["retry-after"]) >= 1
    with api.client(headers=api.headers()) as client:
        above = client.post("/api/v1/admin/keys", json={"name": "too fast", "scopes": ["metrics"], "rate_limits": "5000/second"})
    assert above.status_code == 400 and "rate_limits" in above.json()["error"]["message"]
    lines = audit_lines(api, since, lambda lines: any(line["action"] == "rate_limit" for line in lines), actor=f"key:{key['key_id']}")
    assert any(line["action"] == "rate_limit" and line["outcome"] == "refused" for line in lines)


def test_an_admin_creates_rotates_and_reads_the_audit_trail(api: Api) -> None:
    tenants = tenants_of(api)
    since = started()
    made = create_key(api, ["search"], collections=["t-a-*"], sources=["/srv/team-a"], expires_in="90d")
    expires = dt.datetime.fromisoformat(made["expires_at"])
    assert abs((expires - dt.datetime.now(dt.UTC)) - dt.timedelta(days=90)) < dt.timedelta(minutes=5)
    assert made["collections"] == ["t-a-*"] and made["sources"] == ["/srv/team-a"]
    with api.client(headers=api.headers()) as client:
        rotated = client.post(f"/api/v1/admin/keys/{made['key_id']}/rotate", json={"grace": "0"})
        again = client.post(f"/api/v1/admin/keys/{made['key_id']}/rotate", json={"grace": "1h"})
        unknown = client.post("/api/v1/admin/keys/0123456789ab/rotate", json={"grace": "0"})
    assert rotated.status_code == 201, rotated.text
    new, old = rotated.json()["key"], rotated.json()["replaced"]
    assert old["replaced_by"] == new["key_id"] and old["revoked_at"] and new["collections"] == ["t-a-*"]
    assert again.status_code == 409 and unknown.status_code == 404
    with api.client() as client:
        refused = client.post("/api/v1/search", json={"query": "fox", "collection": tenants.a}, headers={"X-API-Key": made["key"]})
        works = client.post("/api/v1/search", json={"query": "fox", "collection": tenants.a}, headers={"X-API-Key": new["key"]})
        other = client.post("/api/v1/search", json={"query": "tea", "collection": tenants.b}, headers={"X-API-Key": new["key"]})
    assert refused.status_code == 401 and works.status_code == 200 and other.status_code == 404

    def complete(lines: list[dict[str, Any]]) -> bool:
        actions = {line["action"] for line in lines}
        return {"key.created", "key.rotated", "admin.create_key", "admin.rotate_key"} <= actions

    lines = audit_lines(api, since, complete)
    mine = [line for line in lines if made["key_id"] in line["target"] or new["key_id"] in line["target"] + line["detail"]]
    assert {(line["action"], line["target"]) for line in mine} >= {
        ("key.created", f"key:{made['key_id']}"), ("key.created", f"key:{new['key_id']}"), ("key.rotated", f"key:{made['key_id']}")}
    rotations = [line for line in lines if line["target"] == f"POST /api/v1/admin/keys/{made['key_id']}/rotate"]
    assert [line["outcome"] for line in rotations if line["action"] == "admin.rotate_key"] == ["ok", "refused"]  # one line a call
    assert any(line["action"] == "admin.rotate_key" and line["outcome"] == "refused" and "409" in line["detail"] for line in lines)
    text = json.dumps(lines)
    assert made["key"] not in text and new["key"] not in text and made["key"].split("_")[-1] not in text
    assert api.keys["admin"] not in text


def test_refusals_are_audited_without_the_credential(api: Api) -> None:
    since = started()
    wrong = f"ctd_0123456789ab_{uuid.uuid4().hex}"
    plain = create_key(api, ["search"], collections=["*"])
    with api.client() as client:
        assert client.get("/api/v1/metrics/system", headers={"X-API-Key": wrong}).status_code == 401
        # Refused on its headers, before its body is read.
        assert client.post("/api/v1/search", json={"query": "x"}, headers={"X-API-Key": wrong}).status_code == 401
        assert client.get("/api/v1/metrics/system", headers={"X-API-Key": plain["key"]}).status_code == 403
        assert client.get("/api/v1/admin/keys", headers={"X-API-Key": plain["key"]}).status_code == 403

    def complete(lines: list[dict[str, Any]]) -> bool:
        return sum(line["actor"] == "anonymous" and line["detail"] == "unknown_key" for line in lines) >= 2 and any(
            line["action"] == "admin.list_keys" for line in lines)

    lines = audit_lines(api, since, complete)
    anonymous = [line for line in lines if line["actor"] == "anonymous" and line["action"] == "authenticate"]
    unknown = [line for line in anonymous if line["detail"] == "unknown_key"]  # other tests' keys may be refused meanwhile
    assert {line["target"] for line in unknown} >= {"GET /api/v1/metrics/system", "POST /api/v1/search"}
    assert all(line["outcome"] == "refused" and line["address"] for line in anonymous)
    own = [line for line in lines if line["actor"] == f"key:{plain['key_id']}"]
    assert ("authorize", "refused", "needs the metrics scope") in {(line["action"], line["outcome"], line["detail"]) for line in own}
    assert ("admin.list_keys", "refused", "needs the admin scope") in {(line["action"], line["outcome"], line["detail"]) for line in own}
    text = json.dumps(lines)
    assert wrong not in text and wrong.split("_")[-1] not in text and plain["key"] not in text


@pytest.mark.parametrize("body", [
    {"grace": "soon"}, {"grace": "-1"}, {"grace": "1w"},
])
def test_a_rotation_needs_a_grace_it_can_read(embedded_api: Api, body: dict[str, str]) -> None:
    made = create_key(embedded_api, ["search"])
    with embedded_api.client(headers=embedded_api.headers()) as client:
        answer = client.post(f"/api/v1/admin/keys/{made['key_id']}/rotate", json=body)
    assert answer.status_code == 400 and "grace" in answer.json()["error"]["message"]


def test_the_audit_trail_is_read_from_an_rfc3339_time(embedded_api: Api) -> None:
    with embedded_api.client(headers=embedded_api.headers()) as client:
        for since in ("0.5", "2026-01-31", "2026-01-31T12:00:00"):  # a number, a date, a time without its zone
            answer = client.get("/api/v1/admin/audit", params={"since": since})
            assert answer.status_code == 400 and "RFC 3339" in answer.json()["error"]["message"], since
        assert client.get("/api/v1/admin/audit", params={"limit": 10_001}).status_code == 422
        newest = client.get("/api/v1/admin/audit", params={"since": "0001-01-01T00:00:00+14:00", "limit": 1}).json()["entries"]
    assert len(newest) == 1  # a time before year 1 in UTC reads from the first line on
