"""The optional rerank stage against a TEI-compatible server on loopback: it reorders the best hits,
and a reranker that fails, is slow or refuses the key leaves the search answering without it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from citadel.indexing import index_source
from citadel.resources import Resources
from citadel.search import search_with
from citadel.settings import Settings
from tests.support.rerank_server import RerankServer, relevance

RECORDS = [
    {"id": "keeper", "text": "The keeper lights the harbour lamp at dusk and trims its wick."},
    {"id": "lamp", "text": "An oil lamp burns paraffin; its wick draws the oil up."},
    {"id": "harbour", "text": "The harbour wall shelters boats from the winter storms."},
    {"id": "tides", "text": "Spring tides come twice a month at the new and full moon."},
    {"id": "fog", "text": "In fog the horn sounds two blasts every minute."},
]
QUERY = "who lights the harbour lamp"


@pytest.fixture
async def indexed(data_dir: Path, collection_name: str) -> AsyncIterator[str]:
    resources = Resources(Settings())
    try:
        await index_source(resources, RECORDS, collection_name, source_name="lighthouse")
    finally:
        await resources.aclose()
    yield collection_name


async def searched(collection: str, **settings: object) -> object:
    resources = Resources(Settings(**settings))  # type: ignore[arg-type]
    try:
        return await search_with(resources, QUERY, collection, limit=3, by_document=True)
    finally:
        await resources.aclose()


async def test_the_reranker_orders_the_best_hits(indexed: str) -> None:
    with RerankServer(api_key="rk-secret") as server:
        found = await searched(indexed, rerank_url=server.url, rerank_api_key="rk-secret", rerank_top_k=4)
    assert found.reranked and found.warnings == []  # type: ignore[attr-defined]
    (request,) = server.requests
    assert request["query"] == QUERY and len(request["texts"]) == 4  # the top 4 scored, 3 kept
    hits = found.hits  # type: ignore[attr-defined]
    assert len(hits) == 3 and hits[0].document_id.endswith("keeper")
    assert [hit.score for hit in hits] == [relevance(QUERY, hit.text) for hit in hits]
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


@pytest.mark.parametrize(("trouble", "said"), [
    ("fails", "answered 503"), ("slow", "did not answer within 0.2 s"), ("wrong key", "answered 401"), ("down", "could not be reached"),
])
async def test_a_failing_reranker_is_skipped_and_said(indexed: str, trouble: str, said: str) -> None:
    plain = await searched(indexed)
    server = RerankServer(api_key="rk-secret")
    server.fail_status = 503 if trouble == "fails" else None
    server.delay_s = 1.0 if trouble == "slow" else 0.0
    key = "rk-wrong" if trouble == "wrong key" else "rk-secret"
    with contextlib.ExitStack() as running:
        if trouble == "down":
            with server:
                url = server.url  # nothing listens there once it stopped
        else:
            url = running.enter_context(server).url
        found = await searched(indexed, rerank_url=url, rerank_api_key=key, rerank_timeout_s=0.2)
    assert not found.reranked and len(found.warnings) == 1 and said in found.warnings[0]  # type: ignore[attr-defined]
    assert "rk-" not in found.warnings[0]  # type: ignore[attr-defined]
    assert [hit.id for hit in found.hits] == [hit.id for hit in plain.hits]  # type: ignore[attr-defined]


async def test_no_reranker_unless_one_is_set(indexed: str) -> None:
    found = await searched(indexed)
    assert not found.reranked and found.warnings == [] and len(found.hits) == 3  # type: ignore[attr-defined]
