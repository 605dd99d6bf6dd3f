"""Citadel on a real Prefect server: deployed from prefect.yaml, run by process workers.

One server (SQLite in a temporary folder) for the module, two workers on one process pool, and
the production code paths of every backend: Postgres for the registry, Redis for the cache, a
Qdrant REST server shared by the workers, and an S3 server (moto) both read from.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from citadel.documents import chunk_text
from citadel.registry import Registry
from citadel.settings import Settings
from citadel.store import VectorStore
from citadel.testing.corpus import write_corpus
from citadel.testing.prefect_server import BIN, PrefectServer
from citadel.testing.qdrant_process import start_qdrant_process, stop_qdrant_process
from citadel.testing.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server, start_s3_server
from tests.support.s3 import BUCKET

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)


@pytest.fixture(scope="module")
def stack_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The S3 server the stack's workers read s3:// sources from."""
    with start_s3_server(tmp_path_factory.mktemp("moto")) as s3:
        s3.create_bucket(BUCKET)
        yield s3


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, stack_s3: S3Server):
    """Prefect server + Qdrant REST server + two workers, with Citadel pointed at production backends."""
    from tests.conftest import POSTGRES_URL, REDIS_URL

    root = tmp_path_factory.mktemp("stack")
    qdrant, qdrant_url = start_qdrant_process(root / "qdrant")
    s3 = stack_s3
    env = {
        "CITADEL_DATA_DIR": str(root / "data"),
        "CITADEL_QDRANT_URL": qdrant_url,
        "CITADEL_DATABASE_URL": POSTGRES_URL,
        "CITADEL_REDIS_URL": REDIS_URL,
        "CITADEL_COLLECTION": "deployed",
        # The scheduler looks for due schedules every 2 s instead of every minute.
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        # Results go to the storage block `citadel setup --result-storage` saves, as on several machines.
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "local-file-system/citadel-results",
        # The workers read s3:// sources from the S3 server with the test keys, and nothing of this machine's own AWS set-up.
        "CITADEL_S3_ENDPOINT_URL": s3.url,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_REGION": "us-east-1",
        "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-credentials"),
        "AWS_CONFIG_FILE": str(root / "no-aws-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    server = PrefectServer(root / "prefect", env=env)
    try:
        server.start()
        server.run([str(BIN / "citadel"), "setup", "--result-storage", str(root / "results"), "--json"])
        server.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"])
        server.start_worker("citadel", "worker-a")
        server.start_worker("citadel", "worker-b")
        yield server, root, env
    finally:
        server.stop()
        stop_qdrant_process(qdrant)


def settings_of(env: dict[str, str], **overrides: object) -> Settings:
    values = {k.removeprefix("CITADEL_").lower(): v for k, v in env.items() if k.startswith("CITADEL_")}
    return Settings(**{**values, **overrides})


def create_run(server: PrefectServer, deployment: str, parameters: dict, key: str | None = None) -> tuple[str, float]:
    """Trigger a deployment through Prefect's REST API, as an external system would.

    The idempotency key makes the retry of a trigger whose answer was lost return the same run.
    """
    started = time.perf_counter()
    body = {"parameters": parameters, "idempotency_key": key or uuid.uuid4().hex}
    run = server.api("POST", f"/deployments/{server.deployment_id(deployment)}/create_flow_run", json=body)
    return run["id"], started


async def state_of_index(settings: Settings, collection: str) -> tuple[int, int, int]:
    registry = Registry(settings.registry_url)
    await registry.init()
    chunks = await registry.count_chunks(collection)
    stats = {s["collection"]: s for s in await registry.collection_stats()}
    await registry.aclose()
    store = VectorStore.connect(url=settings.qdrant_url, api_key=None, path=settings.qdrant_path)
    vectors = await store.count(collection)
    store.client.close()
    return vectors, chunks, stats.get(collection, {}).get("documents", 0)


def test_deployments_match_the_catalog(stack) -> None:
    """prefect.yaml and `citadel serve` declare the same deployments, schedules and limits."""
    server, _, _ = stack
    from deployments.catalog import NIGHTLY_CRON, catalog

    for spec in catalog():
        deployment = server.api("GET", f"/deployments/name/{spec.full_name}")
        assert deployment["entrypoint"] == spec.entrypoint
        assert deployment["work_pool_name"] == "citadel"
    nightly = server.api("GET", "/deployments/name/index-corpus/nightly")
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == [NIGHTLY_CRON]
    limit = nightly.get("global_concurrency_limit") or {}
    assert limit.get("limit") == 1 or nightly.get("concurrency_limit") == 1


def test_rest_trigger_indexes_and_is_searchable(stack, tmp_path: Path) -> None:
    server, _, env = stack
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=4, seed=3)
    (corpus / "zebra.md").write_text("Zebras juggle xylophones near quartz fountains.\n")
    collection = f"rest_{uuid.uuid4().hex[:8]}"
    parameters = {"source": str(corpus), "collection": collection}
    run_id, started = create_run(server, "index-corpus/on-demand", parameters, key=collection)
    # A retried trigger with the same idempotency key gets the same run, not a second one.
    assert create_run(server, "index-corpus/on-demand", parameters, key=collection)[0] == run_id
    final = server.wait_for_flow_run(run_id)
    elapsed = time.perf_counter() - started
    assert final["state"]["type"] == "COMPLETED", server.log_text()
    print(f"REST trigger to Completed: {elapsed:.2f}s")
    (tmp_path.parent / "trigger_latency.txt").write_text(f"{elapsed:.3f}\n")

    settings = settings_of(env)
    vectors, chunks, documents = asyncio.run(state_of_index(settings, collection))
    assert documents == 5 and vectors == chunks > 0
    from citadel.search import search

    hits = asyncio.run(search(settings, "zebras juggling xylophones", collection, limit=1)).hits
    assert hits[0].document_id == str(corpus / "zebra.md")


def test_workflow_with_parallel_branches_and_a_failing_step(stack, tmp_path: Path) -> None:
    server, _, env = stack
    workflow = {
        "workflow_id": "branches",
        "context": {"collection": f"wf_{uuid.uuid4().hex[:8]}"},
        "steps": [
            {"step_id": "index", "type": "index", "parameters": {
                "source": [{"id": "z", "text": "zebras juggle xylophones"}, {"id": "c", "text": "cats sleep all day"}],
                "collection": "${context.collection}"}},
            {"step_id": "search", "type": "search", "depends_on": ["index"], "parameters": {
                "query": "zebras", "collection": "${context.collection}", "limit": 1}},
            {"step_id": "chunk", "type": "chunk", "parameters": {"text": "one. two. three.", "chunk_size": 6, "chunk_overlap": 0}},
            {"step_id": "embed", "type": "embedding", "parameters": {"texts": "${steps.chunk.output.texts}"}},
            {"step_id": "broken", "type": "flow", "parameters": {"deployment": "no-such-flow/none"}},
            {"step_id": "after_broken", "type": "embedding", "depends_on": ["broken"], "parameters": {"text": "never"}},
            {"step_id": "after_after", "type": "chunk", "depends_on": ["after_broken"], "parameters": {"text": "never"}},
        ],
    }
    path = tmp_path / "branches.json"
    path.write_text(json.dumps(workflow))
    done = server.run([str(BIN / "citadel"), "workflow", "run", str(path), "--json"])
    run_id = json.loads(done.stdout)["flow_run_id"]
    final = server.wait_for_flow_run(run_id)
    assert final["state"]["type"] == "FAILED"

    status = json.loads(server.run([str(BIN / "citadel"), "workflow", "status", run_id, "--json"]).stdout)
    deadline = time.monotonic() + 30
    while any(s["state"] in ("Pending", "Running") for s in status["steps"].values()) and time.monotonic() < deadline:
        time.sleep(1)  # task states reach the server as events, a moment after the flow run ends
        status = json.loads(server.run([str(BIN / "citadel"), "workflow", "status", run_id, "--json"]).stdout)
    steps = status["steps"]
    assert status["state"] == "Failed" and status["workflow_id"] == "branches"
    assert {sid: steps[sid]["state"] for sid in steps} == {
        "index": "Completed", "search": "Completed", "chunk": "Completed", "embed": "Completed",
        "broken": "Failed", "after_broken": "Skipped", "after_after": "Skipped",
    }
    assert "no-such-flow/none" in steps["broken"]["error"]
    assert steps["index"]["start"] and steps["index"]["end"] >= steps["index"]["start"]
    # The two branches overlapped: chunk started before search finished.
    assert steps["chunk"]["start"] < steps["search"]["end"]


def _in_seconds(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def test_interval_schedule_fires_on_its_own(stack) -> None:
    server, _, _ = stack
    deployment_id = server.deployment_id("embed-texts/default")
    schedule = server.api(
        "POST", f"/deployments/{deployment_id}/schedules",
        # Due a few seconds from now, then hourly: one run to wait for. An interval of a few seconds
        # had the scheduler queue a hundred runs, one every few seconds, that flooded the workers.
        json=[{"schedule": {"interval": 3600, "anchor_date": _in_seconds(5), "timezone": "UTC"}, "active": True,
               "parameters": {"texts": ["scheduled text"]}}],
    )[0]
    try:
        deadline = time.monotonic() + 150
        completed = []
        while time.monotonic() < deadline and not completed:
            runs = server.api("POST", "/flow_runs/filter", json={
                "deployments": {"id": {"any_": [deployment_id]}},
                "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
            })
            completed = [r for r in runs if r.get("auto_scheduled")]
            time.sleep(1)
        assert completed, f"no scheduled run completed:\n{server.log_text()}"
    finally:
        server.api("DELETE", f"/deployments/{deployment_id}/schedules/{schedule['id']}")


def test_a_bucket_sharded_on_two_workers_is_indexed_exactly_once(stack, stack_s3: S3Server, tmp_path: Path) -> None:
    """Workers on several machines share no folder: they read the objects of one bucket, each
    fetching only its shard's, and a re-run after a delete fetches nothing and removes exactly it."""
    server, _, env = stack
    s3 = stack_s3
    paths = write_corpus(tmp_path / "corpus", files=24, seed=5)
    prefix = f"sharded-{uuid.uuid4().hex[:8]}/"
    source = f"s3://{BUCKET}/{prefix}"
    asyncio.run(s3.put_objects(BUCKET, {prefix + path.name: path.read_bytes() for path in paths}))
    collection = f"shards_{uuid.uuid4().hex[:8]}"
    mark = s3.mark()
    run_id, _ = create_run(server, "index-sharded/default", {"source": source, "collection": collection, "shards": 3})
    final = server.wait_for_flow_run(run_id, timeout=400)
    assert final["state"]["type"] == "COMPLETED", server.log_text()
    fetched = [request.key for request in s3.object_gets(mark)]
    assert sorted(fetched) == sorted(prefix + path.name for path in paths), "each object fetched once, by one shard"

    settings = settings_of(env)
    expected = sum(len(chunk_text(p.read_text(), settings.chunk_size, settings.chunk_overlap)) for p in paths)
    vectors, chunks, documents = asyncio.run(state_of_index(settings, collection))
    assert (documents, chunks, vectors) == (24, expected, expected)

    children = server.api("POST", "/flow_runs/filter", json={
        "flow_runs": {"parent_task_run_id": {"is_null_": False}},
        "deployments": {"id": {"any_": [server.deployment_id("index-corpus/on-demand")]}},
    })
    shard_runs = [r for r in children if r["parameters"].get("collection") == collection]
    assert sorted(r["parameters"]["shard"] for r in shard_runs) == [0, 1, 2]
    assert all(r["state"]["type"] == "COMPLETED" for r in shard_runs)
    # Each shard's run keeps a name of its own; the parent is named, tagged and sums its shards up.
    names = [f"index-{collection}-shard-{n}-of-3" for n in (1, 2, 3)]
    assert sorted(r["name"] for r in shard_runs) == names
    parent = server.api("GET", f"/flow_runs/{run_id}")
    assert parent["name"] == f"index-{collection}-in-3-shards" and f"collection:{collection}" in parent["tags"]
    from tasks.reporting import artifact_key

    artifacts = server.api("POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    (table,) = [a for a in artifacts if a["key"] == artifact_key("index-sharded", collection)]
    rows = json.loads(table["data"])
    assert sorted(row["shard run"] for row in rows) == names and sum(row["added"] for row in rows) == 24

    # Deleting an object and running again fetches nothing and removes exactly its chunks, in its own shard only.
    gone = paths.pop()
    s3.delete_object(BUCKET, prefix + gone.name)
    mark = s3.mark()
    run_id, _ = create_run(server, "index-sharded/default", {"source": source, "collection": collection, "shards": 3})
    assert server.wait_for_flow_run(run_id, timeout=400)["state"]["type"] == "COMPLETED"
    assert s3.object_gets(mark) == []
    expected = sum(len(chunk_text(p.read_text(), settings.chunk_size, settings.chunk_overlap)) for p in paths)
    assert asyncio.run(state_of_index(settings, collection)) == (expected, expected, 23)


def test_cli_and_python_triggers(stack) -> None:
    """The README's other two ways to trigger a run: `prefect deployment run` and run_deployment()."""
    server, _, _ = stack
    command = [str(BIN / "prefect"), "deployment", "run", "embed-texts/default", "--param", 'texts=["from the cli"]', "--watch"]
    done = server.run(command, timeout=240)
    assert "Completed" in done.stdout, done.stdout

    script = (
        "import asyncio; from prefect.deployments import run_deployment\n"
        "run = run_deployment('similarity-search/default', parameters={'query': 'zebras', 'collection': 'deployed'}, timeout=0)\n"
        "print(run.id)\n"
    )
    out = server.run([str(BIN / "python"), "-c", script])
    run_id = out.stdout.strip().splitlines()[-1]
    final = server.wait_for_flow_run(run_id)
    # The collection may not exist: what matters is that the run was created and executed by a worker.
    assert final["state"]["type"] in ("COMPLETED", "FAILED")
    assert final["start_time"] is not None


def test_a_deployed_search_gives_its_caller_the_hits(stack, tmp_path: Path) -> None:
    """run_deployment(...).state.result() reads the hits back from the shared result storage."""
    server, root, _ = stack
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2, seed=8)
    (corpus / "zebra.md").write_text("Zebras juggle xylophones near quartz fountains.\n")
    collection = f"hits_{uuid.uuid4().hex[:8]}"
    run_id, _ = create_run(server, "index-corpus/on-demand", {"source": str(corpus), "collection": collection})
    assert server.wait_for_flow_run(run_id)["state"]["type"] == "COMPLETED", server.log_text()
    script = (
        "import asyncio, json; from prefect.deployments import run_deployment\n"
        "run = run_deployment('similarity-search/default', parameters="
        f"{{'query': 'zebras juggling', 'collection': {collection!r}, 'limit': 2}})\n"
        "print('HITS' + json.dumps(run.state.result()))\n"
    )
    out = server.run([str(BIN / "python"), "-c", script], timeout=240)
    found = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("HITS"))[4:])
    hits = found["hits"]
    assert found["mode"] == "hybrid" and hits[0]["document_id"] == str(corpus / "zebra.md") and len(hits) == 2
    assert any((root / "results").iterdir()), "results are kept in the storage block's folder"


def test_an_index_summary_is_read_over_the_rest_api(stack, tmp_path: Path) -> None:
    """An external system reads what a run did from its artifact, over Prefect's REST API alone."""
    server, _, _ = stack
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3, seed=9)
    (corpus / "empty.md").write_text("")
    collection = f"rest_summary_{uuid.uuid4().hex[:8]}"
    run_id, _ = create_run(server, "index-corpus/on-demand", {"source": str(corpus), "collection": collection})
    final = server.wait_for_flow_run(run_id)
    assert final["state"]["type"] == "COMPLETED" and final["name"] == f"index-{collection}"
    assert f"collection:{collection}" in final["tags"]
    artifacts = server.api("POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    shown = {a["key"]: a for a in artifacts if a["key"]}
    (row,) = json.loads(shown[f"index-{collection.replace('_', '-')}"]["data"])
    assert (row["added"], row["failed"], row["unchanged"]) == (3, 1, 0)
    assert row["chunks_written"] == row["chunks_embedded"] + row["cache_hits"] > 0, "through the shared Redis cache"
    assert "empty.md" in shown[f"dead-letters-{collection.replace('_', '-')}"]["data"]


def test_a_profile_s_prefect_api_sends_a_workflow_to_its_deployment(stack, tmp_path: Path) -> None:
    """PREFECT_API_URL set only with `prefect config set` (a profile), not in the environment."""
    server, _, _ = stack
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(f'active = "citadel"\n\n[profiles.citadel]\nPREFECT_API_URL = "{server.api_url}"\n')
    workflow = tmp_path / "chunk.yaml"
    workflow.write_text("workflow_id: via-profile\nsteps:\n  - step_id: c\n    type: chunk\n    parameters: {text: words}\n")
    done = server.run(
        [str(BIN / "citadel"), "workflow", "run", str(workflow), "--json"],
        without=("PREFECT_API_URL",), PREFECT_PROFILES_PATH=str(profiles),
    )
    run_id = json.loads(done.stdout)["flow_run_id"]
    run = server.api("GET", f"/flow_runs/{run_id}")
    assert run["deployment_id"] == server.deployment_id("run-workflow/default"), "it went through the deployment"
    assert server.wait_for_flow_run(run_id)["state"]["type"] == "COMPLETED", server.log_text()


def test_setup_saves_the_stack_s_blocks_and_editing_one_changes_every_deployed_run(stack, tmp_path: Path) -> None:
    """`citadel setup` saved a block for each backend the stack names; the deployments read blocks
    called `citadel` (prefect.yaml's work pool); an operator points every run at another embedding
    server by editing one block, as the Blocks page does (PATCH of its data)."""
    from tests.support.embedding_server import EmbeddingServer

    server, _, env = stack
    deployment = server.api("GET", "/deployments/name/index-corpus/on-demand")
    assert deployment["job_variables"]["env"]["CITADEL_BLOCKS"] == "citadel"
    for slug in ("citadel-redis-cache", "citadel-qdrant", "citadel-registry-database"):
        document = server.api("GET", f"/block_types/slug/{slug}/block_documents/name/citadel")
        assert document["block_type"]["slug"] == slug
    registry = server.api("GET", "/block_types/slug/citadel-registry-database/block_documents/name/citadel")
    assert registry["data"]["url"] != env["CITADEL_DATABASE_URL"]  # a secret, shown masked
    corpus = tmp_path / "corpus"
    corpus.mkdir()

    def new_text() -> None:  # a text no embedding cache holds, so the run asks its embedder
        (corpus / f"{uuid.uuid4().hex}.md").write_text(f"A note about {uuid.uuid4().hex} and nothing else.\n")

    with EmbeddingServer() as first, EmbeddingServer() as second:
        save = (
            "from blocks import OllamaEmbedderBlock\n"
            f"OllamaEmbedderBlock(urls=[{first.url!r}]).save('citadel')\n"
        )
        server.run([str(BIN / "python"), "-c", save])
        block = server.api("GET", "/block_types/slug/citadel-ollama-embedder/block_documents/name/citadel")
        try:
            new_text()
            run_id, _ = create_run(server, "index-corpus/on-demand", {"source": str(corpus), "collection": f"blk_{uuid.uuid4().hex[:8]}"})
            assert server.wait_for_flow_run(run_id)["state"]["type"] == "COMPLETED", server.log_text()
            assert first.requests and not second.requests  # the block's server, not the worker's default embedder
            asked = sum(first.requests.values())

            server.api("PATCH", f"/block_documents/{block['id']}", json={"data": {"urls": [second.url]}, "merge_existing_data": True})
            new_text()
            run_id, _ = create_run(server, "index-corpus/on-demand", {"source": str(corpus), "collection": f"blk_{uuid.uuid4().hex[:8]}"})
            assert server.wait_for_flow_run(run_id)["state"]["type"] == "COMPLETED", server.log_text()
            assert second.requests and sum(first.requests.values()) == asked
        finally:
            server.api("DELETE", f"/block_documents/{block['id']}")  # the other tests' runs use the default embedder


def _page_text(browser, url: str, shows: str, timeout: float = 90) -> str:
    """The text of a Prefect UI page once it shows ``shows`` (the UI renders in the browser)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, timeout).until(lambda driver: shows in driver.find_element(By.TAG_NAME, "body").text)
    time.sleep(1)  # the rest of the page (its lazily loaded parts) settles
    return browser.find_element(By.TAG_NAME, "body").text


def test_the_prefect_ui_shows_named_runs_a_described_run_form_and_the_blocks(stack, tmp_path: Path) -> None:
    """What an operator sees in Prefect's own UI, in Debian's headless Chromium: the Run form of
    index-corpus with titled, described parameters and no "type None"; the Blocks page with the
    blocks `citadel setup` saved; a run page with the run's readable name and its custom state.
    Screenshots go to CITADEL_SCREENSHOTS (default: the test's folder)."""
    import os

    from tests.support.chromium import headless_chromium

    server, _, _ = stack
    shots = Path(os.environ.get("CITADEL_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    ui = server.api_url.removesuffix("/api")
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2, seed=9)
    (corpus / "empty.md").write_text("")
    collection = f"ui_{uuid.uuid4().hex[:8]}"
    run_id, _ = create_run(server, "index-corpus/on-demand", {"source": str(corpus), "collection": collection})
    assert server.wait_for_flow_run(run_id)["state"]["name"] == "Completed with 1 failed document"
    with headless_chromium(1400, 1800) as browser:
        form = _page_text(browser, f"{ui}/deployments/deployment/{server.deployment_id('index-corpus/on-demand')}/run", "Collection")
        browser.save_screenshot(str(shots / "prefect-run-form.png"))
        for title in ("Source", "Collection", "Embedder", "Re-process every document", "Delete what the source no longer holds"):
            assert title in form, title
        assert "The collection to write" in form and 'Property is type "None"' not in form
        # Run it as an operator would: only the source typed in; what the form leaves alone stays unset.
        from selenium.webdriver.common.by import By

        submitted = tmp_path / "from-the-form"
        write_corpus(submitted, files=2, seed=10)
        browser.find_elements(By.CSS_SELECTOR, "textarea")[0].send_keys(str(submitted))
        next(b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Submit").click()
        deadline = time.monotonic() + 60
        def made_by_the_form() -> list[dict]:
            return [r for r in server.api("POST", "/flow_runs/filter", json={}) if r["parameters"].get("source") == str(submitted)]

        resubmitted = False
        while not (made := made_by_the_form()):
            page = browser.find_element(By.TAG_NAME, "body").text
            if "Something went wrong" in page and not resubmitted:
                # Prefect's server answered the UI's create with an error (a loaded machine's SQLite
                # server does at times): submit again, as an operator would, once.
                resubmitted = True
                next(b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Submit").click()
            if time.monotonic() > deadline:
                browser.save_screenshot(str(shots / "prefect-run-form-submitted.png"))
                raise AssertionError(f"the form made no run: {browser.find_element(By.TAG_NAME, 'body').text[:3000]}")
            time.sleep(1)
        (from_form,) = made
        assert {key for key, value in from_form["parameters"].items() if value is None} == set(), from_form["parameters"]
        final = server.wait_for_flow_run(from_form["id"])
        assert final["state"]["type"] == "COMPLETED" and final["name"] == "index-deployed", final

        blocks = _page_text(browser, f"{ui}/blocks", "citadel")
        browser.save_screenshot(str(shots / "prefect-blocks.png"))
        for kind in ("Citadel Qdrant", "Citadel Redis Cache", "Citadel Registry Database"):
            assert kind in blocks, kind

        run = _page_text(browser, f"{ui}/runs/flow-run/{run_id}", f"index-{collection}")
        browser.save_screenshot(str(shots / "prefect-run.png"))
        assert "Completed with 1 failed document" in run
