"""A cancel storm against a real ``citadel api``: workflows cancelled while they wait for, or hold,
the embedding backend's only slot must leave it free for the next one."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectNotFound

from tests.api.conftest import Api, start_api
from tests.support.embedding_server import EmbeddingServer

LIMIT = "citadel-embedder-ollama"


async def _fresh_limit() -> None:
    from tasks.slots import forget_holder, read_holders

    async with get_client() as client:
        for holder in await read_holders(client, LIMIT):
            await forget_holder(client, holder.lease_id)
        try:
            await client.delete_global_concurrency_limit_by_name(LIMIT)
        except ObjectNotFound:
            pass
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=LIMIT, limit=1))


async def _slots() -> tuple[int, list]:
    from tasks.slots import read_holders

    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name(LIMIT)
        return limit.active_slots, await read_holders(client, LIMIT)


@pytest.fixture(scope="module")
def slow_server() -> Iterator[EmbeddingServer]:
    with EmbeddingServer() as server:
        yield server


@pytest.fixture(scope="module")
def ollama_api(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str, slow_server: EmbeddingServer) -> Iterator[Api]:
    asyncio.run(_fresh_limit())
    api = start_api(
        "ollama", tmp_path_factory.mktemp("api-ollama"), prefect_api_url,
        CITADEL_EMBEDDER="ollama", CITADEL_OLLAMA_URLS=slow_server.url, CITADEL_EMBEDDING_MODEL="all-minilm",
        CITADEL_EMBED_BATCH_SIZE="8",
    )
    yield api
    api.process.stop()


def _embedding_workflow(texts: int) -> dict:
    tag = uuid.uuid4().hex
    return {"workflow_id": f"storm-{tag[:8]}", "steps": [
        {"step_id": "embed", "type": "embedding", "parameters": {"texts": [f"storm text {i} {tag}" for i in range(texts)]}},
    ]}


def _final(client: httpx.Client, task_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/v1/orchestration/workflow/{task_id}/status").json()
        if body["status"] in ("Completed", "Failed", "Cancelled", "Crashed") or time.monotonic() > deadline:
            return body
        time.sleep(0.3)


def test_cancelled_workflows_leave_the_embedding_slot_free(ollama_api: Api, slow_server: EmbeddingServer, tmp_path: Path) -> None:
    slow_server.serial(0.05, 0.02)  # one request at a time, as one Ollama server embeds
    try:
        with ollama_api.client(headers=ollama_api.headers("workflows")) as client:
            storm = [client.post("/api/v1/orchestration/workflow", json=_embedding_workflow(70)).json()["task_id"] for _ in range(4)]
            time.sleep(0.5)
            for task_id in storm:
                assert client.post(f"/api/v1/orchestration/workflow/{task_id}/cancel").status_code == 200
            for task_id in storm:
                assert _final(client, task_id, 60)["status"] in ("Cancelled", "Completed")
            started = time.monotonic()
            after = client.post("/api/v1/orchestration/workflow", json=_embedding_workflow(1)).json()["task_id"]
            final = _final(client, after, 60)
            assert final["status"] == "Completed", (final, ollama_api.process.log())
            assert time.monotonic() - started < 30, "the next workflow waited for a slot that cancelled runs kept"
    finally:
        slow_server.serial(0.0, 0.0)
    deadline = time.monotonic() + 10
    while (state := asyncio.run(_slots())) != (0, []) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert state == (0, []), f"slots still taken after every run ended: {state}"
