"""Similarity search straight through the core, for callers that need no flow run (CLI, API)."""

from __future__ import annotations

from typing import Any

from citadel.resources import Resources
from citadel.settings import Settings
from citadel.vectorstore import check_collection_name


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
    check_collection_name(collection)
    resources = Resources(settings)
    try:
        registry = await resources.registry()
        await _check_model(registry, collection, resources)
        vector = (await resources.cached_embedder.embed([query])).vectors[0]
        hits = await resources.store.search(collection, vector, limit=limit, score_threshold=score_threshold, filters=filters)
        return [hit.as_dict() for hit in hits]
    finally:
        await resources.aclose()


async def _check_model(registry, collection: str, resources: Resources) -> None:  # noqa: ANN001
    from citadel.errors import CollectionMismatchError

    known = await registry.collection(collection)
    if known and known[0] != resources.embedder.model:
        raise CollectionMismatchError(
            f"collection {collection!r} holds {known[0]} vectors but the configured embedder is "
            f"{resources.embedder.model}; search it with the same embedder settings it was indexed with"
        )
