"""The index-corpus flow on an s3:// source: two shards (as two workers run them) read each object
exactly once between them and end as one run would have; a run killed half way and run again
ends exact."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from citadel.registry import Registry
from citadel.settings import Settings
from citadel.testing.corpus import index_state
from citadel.testing.s3server import S3Server
from flows.index_corpus import index_corpus
from tests.support.held_run import held_index_script
from tests.support.s3 import BUCKET

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("aws_environment")]


@pytest.fixture
def s3_settings(data_dir: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CITADEL_S3_ENDPOINT_URL", s3_server.url)
    return Settings()


def _fetched(server: S3Server, since: int) -> list[str]:
    return sorted(request.key.rsplit("/", 1)[-1] for request in server.object_gets(since))


async def test_two_shards_read_each_object_exactly_once(s3_server: S3Server, s3_settings: Settings, collection_name: str) -> None:
    prefix = f"sharded-{uuid.uuid4().hex[:8]}/"
    uri = f"s3://{BUCKET}/{prefix}"
    documents = {f"{prefix}doc-{number:02d}.md": f"Document {number} of the sharded bucket.".encode() for number in range(24)}
    await s3_server.put_objects(BUCKET, documents)
    mark = s3_server.mark()
    shards = [await index_corpus(uri, collection=collection_name, shard=shard, shards=2) for shard in range(2)]
    assert sum(shard["added"] for shard in shards) == 24 and all(0 < shard["added"] < 24 for shard in shards)
    fetched = _fetched(s3_server, mark)
    assert fetched == sorted(set(fetched)) and len(fetched) == 24, "every object fetched once, by one shard"
    assert await index_state(s3_settings, collection_name) == (24, 24)
    again = [await index_corpus(uri, collection=collection_name, shard=shard, shards=2) for shard in range(2)]
    assert [shard["unchanged"] for shard in again] == [shard["added"] for shard in shards]


async def test_a_run_killed_half_way_ends_exact_when_run_again(
    s3_server: S3Server, s3_settings: Settings, collection_name: str, tmp_path: Path
) -> None:
    """SIGKILL the run held at an object's embedding, run again: every object indexed once, nothing twice."""
    prefix = f"killed-{uuid.uuid4().hex[:8]}/"
    uri = f"s3://{BUCKET}/{prefix}"
    documents = {f"{prefix}doc-{number:02d}.md": f"Document {number} of the killed run.".encode() for number in range(40)}
    await s3_server.put_objects(BUCKET, documents)
    script = held_index_script(uri, collection_name)
    env = {**os.environ, "CITADEL_DOCUMENT_BATCH_SIZE": "4", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and await _indexed(s3_settings, collection_name, uri) < 8:
            await asyncio.sleep(0.1)
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert 8 <= await _indexed(s3_settings, collection_name, uri) <= 30

    summary = await index_corpus(uri, collection=collection_name)
    assert summary["failed"] == 0 and summary["added"] + summary["unchanged"] == 40 and summary["unchanged"] >= 8
    assert await index_state(s3_settings, collection_name) == (40, 40)


async def _indexed(settings: Settings, collection: str, uri: str) -> int:
    registry = Registry(settings.registry_url)
    await registry.init()
    try:
        stored = await registry.get_documents(collection, [f"{uri}doc-{number:02d}.md" for number in range(40)])
        return sum(document.status == "indexed" for document in stored.values())
    finally:
        await registry.aclose()


async def test_a_sandboxed_workflow_index_step_reads_an_allowed_prefix_and_no_other(
    s3_server: S3Server, s3_settings: Settings, collection_name: str
) -> None:
    """The workflow `index` step of a run started over HTTP: inside CITADEL_API_SOURCE_BUCKETS it
    indexes the prefix; outside it fails before a request reaches the store."""
    from flows.run_workflow import run_workflow

    prefix = f"workflow-{uuid.uuid4().hex[:8]}/"
    await s3_server.put_objects(BUCKET, {f"{prefix}a.md": b"The harbour opens at dawn.", f"{prefix}b.md": b"Tides turn at noon."})

    def index(source: str) -> dict:
        return {"workflow_id": "s3", "steps": [{"step_id": "index", "type": "index", "parameters": {
            "source": source, "collection": collection_name}}]}

    roots = [f"s3://{BUCKET}/{prefix}"]
    done = await (await run_workflow(index(f"s3://{BUCKET}/{prefix}"), source_roots=roots, return_state=True)).aresult()
    assert done["steps"]["index"]["output"]["added"] == 2
    mark = s3_server.mark()
    refused = await run_workflow(index(f"s3://{BUCKET}/"), source_roots=roots, return_state=True)
    assert refused.is_failed()
    assert "CITADEL_API_SOURCE_BUCKETS" in str(await refused.aresult(raise_on_failure=False))
    assert s3_server.requests(mark) == [], "refused before any request"
