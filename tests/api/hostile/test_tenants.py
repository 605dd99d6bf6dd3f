"""Two teams on one service, tested as team A attacking team B over HTTP (``citadel api`` on Redis and
Postgres): A cannot search, index into, read or cancel runs of, or learn the names of B's
collections, by any route, workflow step, reference, version name, glob, variant or path; a key
expired, rotated out or revoked is refused at once by every worker; every refusal is audited, and
no audit line holds a secret."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from citadel.apikeys import ApiKeys
from citadel.registry import Registry
from tests.api.conftest import Api, start_api
from tests.api.test_endpoints import wait_final
from tests.conftest import POSTGRES_URL, REDIS_URL

SECRET = "Zanzibar quartz protocol 9931"
# What differs between two answers to the same question: the request's own id.
VOLATILE = ("request_id",)


@dataclass
class Team:
    prefix: str  # every collection of the team starts with it
    folder: Path  # the team's source folder, inside the service's root
    key: str
    key_id: str

    @property
    def docs(self) -> str:
        return f"{self.prefix}-docs"


@dataclass
class Tenants:
    api: Api
    a: Team
    b: Team
    b_run: str  # a finished run of team B's


def add_key(api: Api, name: str, scopes: list[str], **grants: Any) -> tuple[str, str]:
    """A key made by an operator while the service runs: (value, id)."""

    async def create() -> tuple[str, str]:
        registry = Registry(api.settings.registry_url)
        await registry.init()
        try:
            created = await ApiKeys(registry).create(name, scopes, **grants)
            return created.key, created.key_id
        finally:
            await registry.aclose()

    return asyncio.run(create())


def call(api: Api, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    with api.client(headers={"X-API-Key": key}) as client:
        return client.request(method, path, **kwargs)


def submit(api: Api, key: str, steps: list[dict], context: dict | None = None) -> httpx.Response:
    body: dict[str, Any] = {"workflow_id": f"tenant-{uuid.uuid4().hex[:8]}", "steps": steps}
    if context:
        body["context"] = context
    return call(api, key, "POST", "/api/v1/orchestration/workflow", json=body)


def index_step(collection: str | None, source: Any, **extra: Any) -> dict:
    parameters = {"source": source, **extra}
    if collection is not None:
        parameters["collection"] = collection
    return {"step_id": "index", "type": "index", "parameters": parameters}


def search_step(collection: str) -> dict:
    return {"step_id": "look", "type": "search", "parameters": {"query": SECRET, "collection": collection}}


def without(body: dict, name: str, placeholder: str = "NAME") -> str:
    """An answer's body with its request id dropped and ``name`` replaced, to compare two answers."""
    kept = {key: value for key, value in body.items() if key not in VOLATILE}
    return str(kept).replace(name, placeholder)


@pytest.fixture(scope="module")
def tenants(shared_api: Api) -> Tenants:
    api = shared_api
    tag = uuid.uuid4().hex[:6]
    root = Path(api.env["CITADEL_API_SOURCE_ROOTS"])
    teams = {}
    for name in ("a", "b"):
        folder = root / f"team{name}{tag}"
        folder.mkdir()
        prefix = f"team{name}{tag}"
        key, key_id = add_key(api, f"team-{name}-{tag}", ["search", "workflows", "metrics"],
                              collections=[f"{prefix}-*"], sources=[str(folder)])
        teams[name] = Team(prefix, folder, key, key_id)
    a, b = teams["a"], teams["b"]
    (b.folder / "plan.md").write_text(f"# Plan\n\nThe launch needs the {SECRET}.\n")
    (a.folder / "notes.md").write_text("# Notes\n\nTeam A's ordinary meeting notes.\n")
    (a.folder / "into-b").symlink_to(b.folder)  # a link in A's folder that resolves into B's
    built = submit(api, b.key, [index_step(b.docs, str(b.folder), blue_green=True)])
    assert built.status_code == 200, built.text
    b_run = built.json()["task_id"]
    assert wait_final(api, b_run)["status"] == "Completed"
    mine = submit(api, a.key, [index_step(a.docs, str(a.folder))])
    assert mine.status_code == 200, mine.text
    assert wait_final(api, mine.json()["task_id"])["status"] == "Completed"
    return Tenants(api, a, b, b_run)


def search(t: Tenants, key: str, collection: str, **extra: Any) -> httpx.Response:
    return call(t.api, key, "POST", "/api/v1/search", json={"query": SECRET, "collection": collection, **extra})


def test_each_team_finds_its_own_documents(tenants: Tenants) -> None:
    t = tenants
    found = search(t, t.b.key, t.b.docs)
    assert found.status_code == 200 and any(SECRET in hit["text"] for hit in found.json()["hits"]), found.text
    assert search(t, t.a.key, t.a.docs).status_code == 200


def test_another_teams_collection_answers_as_one_that_does_not_exist(tenants: Tenants) -> None:
    t = tenants
    nowhere = f"{t.a.prefix}-never-made"  # inside A's grant, never indexed
    missing = search(t, t.a.key, nowhere)
    assert missing.status_code == 404, missing.text
    names = [t.b.docs, f"{t.b.docs}__v1", f"{t.b.docs}__v2", "documents"]
    for name in names:
        refused = search(t, t.a.key, name)
        assert refused.status_code == 404, (name, refused.text)
        assert without(refused.json(), name) == without(missing.json(), nowhere), name
        assert SECRET not in refused.text


@pytest.mark.parametrize("variant", ["{b}", "{B}", "{b}*", "*", "{b}?", "{u}", "{b} ", " {b}", "{b}/../{b}"])
def test_no_glob_case_or_unicode_variant_of_a_name_reaches_it(tenants: Tenants, variant: str) -> None:
    t = tenants
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isalnum() and c.isascii() else c for c in t.b.docs)
    name = variant.format(b=t.b.docs, B=t.b.docs.upper(), u=fullwidth)
    for mode in ("dense", "sparse", "hybrid"):
        answer = search(t, t.a.key, name, mode=mode, group_by="document")
        assert answer.status_code in (400, 404, 422), (name, answer.text)  # not a name, or no collection of A's
        assert SECRET not in answer.text and "plan.md" not in answer.text


def test_the_refusal_takes_as_long_as_a_miss(tenants: Tenants) -> None:
    """Interleaved, so the machine's load falls on both alike; medians, so a stall does not decide."""
    t = tenants
    nowhere = f"{t.a.prefix}-never-made"
    refused, missed = [], []
    for _ in range(31):
        for name, times in ((t.b.docs, refused), (nowhere, missed)):
            started = time.perf_counter()
            assert search(t, t.a.key, name).status_code == 404
            times.append(time.perf_counter() - started)
    ratio = statistics.median(refused) / statistics.median(missed)
    assert 0.5 < ratio < 2.0, f"refused {statistics.median(refused) * 1000:.1f} ms, missing {statistics.median(missed) * 1000:.1f} ms"


def test_collection_lists_metrics_and_charts_name_only_the_teams_own(tenants: Tenants) -> None:
    t = tenants
    for path in ("/api/v1/search/collections", "/api/v1/metrics/prometheus", "/api/v1/metrics/embeddings?time_range=1h",
                 "/api/v1/ui/charts/embedding-performance?time_range=1h", "/api/v1/orchestration/workflows?limit=200"):
        answer = call(t.api, t.a.key, "GET", path)
        assert answer.status_code == 200, (path, answer.text)
        assert t.b.prefix not in answer.text, f"{path} names team B's collection"
    listed = call(t.api, t.a.key, "GET", "/api/v1/search/collections").json()["collections"]
    assert [entry["name"] for entry in listed] == [t.a.docs]
    assert t.b.docs in call(t.api, t.b.key, "GET", "/api/v1/search/collections").text


def refused_workflow(t: Tenants, steps: list[dict], context: dict | None = None) -> dict:
    answer = submit(t.api, t.a.key, steps, context)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == "workflow_refused"
    return answer.json()["error"]


def test_no_workflow_step_indexes_into_or_searches_another_teams_collection(tenants: Tenants) -> None:
    t = tenants
    own = str(t.a.folder)
    for collection in (t.b.docs, f"{t.b.docs}__v1", f"{t.b.docs}__v7", t.b.docs.upper(), None):  # None: the service's default
        error = refused_workflow(t, [index_step(collection, own)])
        assert error["details"][0]["location"] == "steps[0].parameters.collection", error
        assert "exist" not in error["details"][0]["message"]  # says nothing of whether it exists
        refused_workflow(t, [search_step(collection)] if collection else [{"step_id": "look", "type": "search",
                                                                            "parameters": {"query": "x"}}])
    # A reference resolves at run time: refused before it could be.
    refused_workflow(t, [index_step("${context.target}", own)], context={"target": t.b.docs})
    refused_workflow(t, [search_step("${context.target}")], context={"target": t.b.docs})
    refused_workflow(t, [{"step_id": "make", "type": "chunk", "parameters": {"text": t.b.docs}},
                         {**index_step("${steps.make.output.texts.0}", own), "depends_on": ["make"]}])


def test_no_path_leads_a_team_into_another_teams_folder(tenants: Tenants) -> None:
    t = tenants
    for source in (str(t.b.folder), f"{t.a.folder}/../{t.b.folder.name}", str(t.a.folder / "into-b"),
                   f"{t.a.folder}/into-b/*.md", f"{t.b.folder}/*.md", str(t.a.folder.parent)):
        error = refused_workflow(t, [index_step(t.a.docs, source)])
        assert error["details"][0]["location"] == "steps[0].parameters.source", (source, error)
    # A glob over A's own folder does not follow the link into B's.
    walked = submit(t.api, t.a.key, [index_step(t.a.docs, f"{t.a.folder}/**/*.md")])
    assert walked.status_code == 200, walked.text
    final = wait_final(t.api, walked.json()["task_id"])
    assert final["status"] == "Completed", final
    hits = search(t, t.a.key, t.a.docs).json()["hits"]
    assert hits and all(SECRET not in hit["text"] for hit in hits)


def test_another_teams_runs_cannot_be_read_listed_or_cancelled(tenants: Tenants) -> None:
    t = tenants
    never = str(uuid.uuid4())
    missing = call(t.api, t.a.key, "GET", f"/api/v1/orchestration/workflow/{never}/status")
    assert missing.status_code == 404
    for method, path in (("GET", "status"), ("POST", "cancel")):
        answer = call(t.api, t.a.key, method, f"/api/v1/orchestration/workflow/{t.b_run}/{path}")
        assert answer.status_code == 404, (path, answer.text)
        assert without(answer.json(), t.b_run, "RUN") == without(missing.json(), never, "RUN"), path
    listed = call(t.api, t.a.key, "GET", "/api/v1/orchestration/workflows?limit=200").json()["workflows"]
    assert t.b_run not in {run["task_id"] for run in listed}
    own = call(t.api, t.b.key, "GET", f"/api/v1/orchestration/workflow/{t.b_run}/status")
    assert own.status_code == 200 and own.json()["status"] == "Completed"  # and A's cancel changed nothing


def audit_lines(api: Api, **query: str) -> list[dict]:
    answer = call(api, api.keys["admin"], "GET", "/api/v1/admin/audit", params={"limit": "10000", **query})
    assert answer.status_code == 200, answer.text
    return answer.json()["entries"]


def test_every_refusal_is_in_the_audit_trail_and_no_line_holds_a_secret(tenants: Tenants) -> None:
    t = tenants
    since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 1))
    search(t, t.a.key, t.b.docs)
    refused_workflow(t, [index_step(t.b.docs, str(t.a.folder))])
    call(t.api, t.a.key, "POST", f"/api/v1/orchestration/workflow/{t.b_run}/cancel")
    call(t.api, t.a.key, "POST", "/api/v1/admin/keys", json={"name": "escalate", "scopes": ["admin"]})
    call(t.api, t.a.key[:-2] + "xx", "POST", "/api/v1/search", json={"query": "x"})
    deadline = time.monotonic() + 20
    while True:  # the trail is written beside the answers
        lines = audit_lines(t.api, since=since)
        refused = [line for line in lines if line["outcome"] == "refused"]
        mine = [line for line in refused if line["actor"] == f"key:{t.a.key_id}"]
        if (len(mine) >= 4 and any(line["actor"] == "anonymous" for line in refused)) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert len(mine) >= 4, refused
    assert {line["target"] for line in mine} >= {t.b.docs, t.b_run}, mine
    assert all(line["address"] for line in refused)
    anonymous = [line for line in refused if line["actor"] == "anonymous"]
    assert anonymous, refused
    everything = str(audit_lines(t.api))
    for secret in (t.a.key, t.b.key, t.a.key.split("_", 2)[2], t.a.key[:-2] + "xx", *t.api.keys.values()):
        assert secret not in everything
    assert "eyJ" not in everything


# -- keys that stop working, in every worker ---------------------------------------------------


@pytest.fixture(scope="module")
def workers_api(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Iterator[Api]:
    """Two worker processes behind one port, on Redis, Postgres and a Qdrant server."""
    from citadel.testing.qdrant_process import start_qdrant_process, stop_qdrant_process

    root = tmp_path_factory.mktemp("api-workers")
    qdrant, qdrant_url = start_qdrant_process(root / "qdrant")
    api = start_api("workers", root, prefect_api_url, CITADEL_REDIS_URL=REDIS_URL, CITADEL_DATABASE_URL=POSTGRES_URL,
                    CITADEL_QDRANT_URL=qdrant_url, CITADEL_API_WORKERS="2")
    yield api
    api.process.stop()
    stop_qdrant_process(qdrant)


def statuses(api: Api, key: str, times: int = 30) -> set[int]:
    """The answers of ``times`` fresh connections (the kernel spreads them over the workers)."""
    found = set()
    for _ in range(times):
        with httpx.Client(base_url=api.url, timeout=30, headers={"X-API-Key": key}) as client:
            found.add(client.get("/api/v1/search/collections").status_code)
    return found


def registry_keys(api: Api) -> Any:
    class Keys:
        def __getattr__(self, name: str) -> Any:
            async def method(*args: Any, **kwargs: Any) -> Any:
                registry = Registry(api.settings.registry_url)
                await registry.init()
                try:
                    return await getattr(ApiKeys(registry), name)(*args, **kwargs)
                finally:
                    await registry.aclose()

            return lambda *args, **kwargs: asyncio.run(method(*args, **kwargs))

    return Keys()


def test_a_revoked_rotated_or_expired_key_is_refused_at_once_by_every_worker(workers_api: Api) -> None:
    api, keys = workers_api, registry_keys(workers_api)
    expiring, _ = add_key(api, f"e-{uuid.uuid4().hex[:6]}", ["search"], collections=["*"], expires_in_s=15)
    started = time.monotonic()
    revoked, revoked_id = add_key(api, f"r-{uuid.uuid4().hex[:6]}", ["search"], collections=["*"])
    rotated, rotated_id = add_key(api, f"o-{uuid.uuid4().hex[:6]}", ["search"], collections=["team-x-*"])
    assert statuses(api, expiring, 10) == {200}
    assert time.monotonic() - started < 14, "too slow to see the key work before it expires"
    for key in (revoked, rotated):
        assert statuses(api, key) == {200}  # every worker has checked it
    keys.revoke(revoked_id)
    new, _old = keys.rotate(rotated_id, 0)
    assert statuses(api, revoked) == {401} and statuses(api, rotated) == {401}
    assert statuses(api, new.key) == {200} and new.collections == ["team-x-*"]
    time.sleep(max(0.0, 15.5 - (time.monotonic() - started)))
    assert statuses(api, expiring) == {401}
    answer = call(api, expiring, "GET", "/api/v1/search/collections")
    assert answer.status_code == 401 and "expired" in answer.json()["error"]["message"]
