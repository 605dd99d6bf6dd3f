"""Search task: nearest chunks to a query vector."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from citadel.resources import get_resources
from citadel.settings import Settings
from tasks.retry import RETRYING


@task(name="search-vectors", cache_policy=NO_CACHE, **RETRYING)
async def search_vectors(
    settings: Settings,
    collection: str,
    vector: list[float],
    limit: int = 10,
    score_threshold: float | None = None,
    filters: dict[str, Any] | None = None,
    by_document: bool = False,
) -> list[dict[str, Any]]:
    """Scored hits as plain dicts (``score``, ``document_id``, ``chunk_index``, ``text`` ...); each
    document's best chunk only, ``by_document``."""
    hits = await get_resources(settings).store.search(
        collection, vector, limit=limit, score_threshold=score_threshold, filters=filters, by_document=by_document
    )
    return [hit.as_dict() for hit in hits]
