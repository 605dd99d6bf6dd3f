"""Search task: nearest chunks to a query vector."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from citadel.models import SearchResults
from citadel.resources import get_resources
from citadel.search import rerank_results, search_options
from citadel.settings import SearchMode, Settings
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
    text: str = "",
    mode: SearchMode | None = None,
) -> dict[str, Any]:
    """:class:`SearchResults` as JSON: the mode that ranked the hits, and the hits (``score``,
    ``document_id``, ``chunk_index``, ``text`` ...); each document's best chunk only, ``by_document``.
    ``text`` is the query's words, for the lexical leg of a sparse or hybrid search."""
    hits = await get_resources(settings).store.search(
        collection, vector, text=text, limit=limit, score_threshold=score_threshold, filters=filters,
        by_document=by_document, options=search_options(settings, mode),
    )
    return SearchResults(mode=hits.mode, hits=[hit.to_result() for hit in hits]).to_json()


@task(name="rerank-hits", cache_policy=NO_CACHE)
async def rerank_hits(settings: Settings, query: str, found: dict[str, Any], limit: int) -> dict[str, Any]:
    """The best hits in the reranker's order (CITADEL_RERANK_URL), cut to ``limit``; unchanged, with a
    warning, when the reranker fails (no retry: a search does not wait on an optional stage)."""
    return (await rerank_results(settings, query, SearchResults.model_validate(found), limit)).to_json()
