"""Embed a query and return the nearest chunks of a collection."""

from __future__ import annotations

from typing import Any

from prefect import flow

from citadel.settings import EmbedderConfig, settings_for
from tasks.embedding import embed_query
from tasks.resources import open_resources
from tasks.search import search_vectors


@flow(name="similarity-search")
async def similarity_search(
    query: str,
    collection: str | None = None,
    limit: int = 10,
    score_threshold: float | None = None,
    filters: dict[str, Any] | None = None,
    embedder: EmbedderConfig | None = None,
) -> list[dict[str, Any]]:
    """Scored hits for ``query``; ``filters`` match payload fields such as ``document_id`` or ``source``."""
    settings = settings_for(embedder)
    collection = collection or settings.collection
    async with open_resources(settings) as resources:
        vector = await embed_query(settings, query, resources.embedder.model)
        return await search_vectors(settings, collection, vector, limit, score_threshold, filters)
