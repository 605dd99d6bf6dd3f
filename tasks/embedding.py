"""Embedding tasks for texts and queries."""

from __future__ import annotations

from datetime import timedelta

from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

from citadel.resources import get_resources
from citadel.settings import Settings
from tasks.limits import embedding_slot
from tasks.retry import RETRYING


@task(name="embed-texts", cache_policy=NO_CACHE, **RETRYING)
async def embed_texts_task(settings: Settings, texts: list[str]) -> dict[str, object]:
    """Vectors for ``texts`` through the embedding cache (the cache, not Prefect, reuses them)."""
    resources = get_resources(settings)
    async with embedding_slot(settings):
        result = await resources.cached_embedder.embed(texts)
    return result.as_dict(resources.embedder.model, resources.embedder.dimensions)


@task(
    name="embed-query",
    # A query's vector depends only on the query, the model and this code: reuse it across runs
    # for a day. Results are stored as JSON, never pickle, so a shared result store cannot run code.
    cache_policy=(INPUTS + TASK_SOURCE) - "settings",
    cache_key_fn=None,
    cache_expiration=timedelta(days=1),
    result_serializer="json",
    **RETRYING,
)
async def embed_query(settings: Settings, query: str, model: str) -> list[float]:
    """The vector of one search query; ``model`` is part of the cache key, the settings are not."""
    async with embedding_slot(settings):
        result = await get_resources(settings).cached_embedder.embed([query])
    return [float(x) for x in result.vectors[0]]
