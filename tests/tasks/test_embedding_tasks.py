"""The query embedding task caches across runs in JSON, never pickle."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from citadel.resources import open_resources
from citadel.settings import Settings
from tasks.embedding import embed_query


async def test_query_vectors_are_cached_across_flow_runs_as_json(data_dir: Path) -> None:
    settings = Settings()

    @flow
    async def run(query: str):
        async with open_resources(settings) as resources:
            state = await embed_query(settings, query, resources.embedder.model, return_state=True)
            return state

    first = await run("cache me across runs")
    second = await run("cache me across runs")
    assert first.is_completed() and second.is_completed()
    assert second.name == "Cached"
    assert await second.result() == await first.result()
    assert embed_query.result_serializer == "json"
