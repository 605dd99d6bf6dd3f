"""Similarity search straight through the core, for callers that need no flow run (CLI, API)."""

from __future__ import annotations

from typing import Any

from citadel.errors import CollectionMismatchError
from citadel.resources import Resources
from citadel.settings import Settings
from citadel.collections import check_collection_name


async def search(
    settings: Settings,
    query: str,
    collection: str,
    *,
    limit: int = 10,
    score_threshold: float | None = None,
    filters: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Embed ``query`` through the cache and return the nearest chunks as plain dicts."""
    resources = Resources(settings)
    try:
        return await search_with(
            resources, query, collection, limit=limit, score_threshold=score_threshold, filters=filters
        )
    finally:
        await resources.aclose()


async def search_with(
    resources: Resources,
    query: str,
    collection: str,
    *,
    limit: int = 10,
    score_threshold: float | None = None,
    filters: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The same search over backends the caller already holds (a workflow step, a long-lived service).

    A collection indexed with another model is refused: its vectors and the query's would not compare.
    """
    check_collection_name(collection)
    known = await (await resources.registry()).collection(collection)
    if known and known[0] != resources.embedder.model:
        raise CollectionMismatchError(
            f"collection {collection!r} holds {known[0]} vectors but the configured embedder is "
            f"{resources.embedder.model}; search it with the same embedder settings it was indexed with"
        )
    vector = (await resources.cached_embedder.embed([query])).vectors[0]
    hits = await resources.store.search(collection, vector, limit=limit, score_threshold=score_threshold, filters=filters)
    return [hit.as_dict() for hit in hits]
