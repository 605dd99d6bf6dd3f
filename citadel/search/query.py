"""Similarity search straight through the core, for callers that need no flow run (CLI, API)."""

from __future__ import annotations

import logging
from typing import Any

from citadel.collections import check_collection_name
from citadel.errors import CollectionMismatchError, CollectionNotFound, ConfigurationError
from citadel.indexing.bluegreen import serving
from citadel.models import SearchResults
from citadel.resources import Resources
from citadel.search.rerank import RerankFailed, rerank
from citadel.settings import SearchMode, Settings
from citadel.store import SearchOptions

log = logging.getLogger(__name__)


def check_query(query: str) -> str:
    """``query`` when it has something to search for; an empty or punctuation-only query would
    embed to nothing and return arbitrary hits, so it is a :class:`ConfigurationError`."""
    if not any(ch.isalnum() for ch in query):
        raise ConfigurationError(
            ("the query is empty" if not query.strip() else f"the query {query!r} has no letters or digits")
            + ": give the words to search for"
        )
    return query


async def search(
    settings: Settings,
    query: str,
    collection: str,
    *,
    limit: int = 10,
    score_threshold: float | None = None,
    filters: dict[str, Any] | None = None,
    by_document: bool = False,
    mode: SearchMode | None = None,
) -> SearchResults:
    """Embed ``query`` through the cache and return the best chunks (each document's best, ``by_document``)."""
    resources = Resources(settings)
    try:
        return await search_with(
            resources, query, collection, limit=limit, score_threshold=score_threshold, filters=filters,
            by_document=by_document, mode=mode,
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
    registered_only: bool = False,
    by_document: bool = False,
    mode: SearchMode | None = None,
) -> SearchResults:
    """The same search over backends the caller already holds (a workflow step, a long-lived service).

    A collection indexed with another model is refused: its vectors and the query's would not
    compare. A blue-green collection is searched through its alias, which Qdrant resolves at each
    search. With ``registered_only`` (the HTTP API) a collection the registry knows neither by
    name nor through the version it serves is :class:`CollectionNotFound`, found before the query
    is checked or embedded; without it (the CLI, a workflow step) the store is searched as it is.
    ``by_document`` gives each document's best chunk only: ``limit`` documents, what a user wants.
    ``mode`` (default: the ``search_mode`` setting) ranks by the embedding, the query's words or both
    (:func:`search_options`).
    """
    check_collection_name(collection)
    if not registered_only:
        check_query(query)
    registry = await resources.registry()
    known = await registry.collection(collection)
    if known is None:  # an alias: the model is its live version's (a plain collection costs no look-up)
        known = await registry.collection(await serving(resources, collection))
    if known is None and registered_only:
        await resources.open_store()  # an embedded store another process holds says so first, as a search of it would
        raise CollectionNotFound(collection)
    check_query(query)
    if known and known[0] != resources.embedder.model:
        raise CollectionMismatchError(
            f"collection {collection!r} holds {known[0]} vectors but the configured embedder is "
            f"{resources.embedder.model}; search it with the same embedder settings it was indexed with"
        )
    vector = (await resources.cached_embedder.embed([query])).vectors[0]
    store = resources.store
    if known and not await store.collection_exists(collection):
        raise ConfigurationError(
            f"collection {collection!r} is in the registry but the vector store has lost it (a new server, a lost "
            f"volume?); `citadel verify --repair --collection {collection}` writes it back"
        )
    hits = await store.search(
        collection, vector, text=query, limit=hits_to_ask(resources.settings, limit), score_threshold=score_threshold,
        filters=filters, by_document=by_document, options=search_options(resources.settings, mode),
    )
    found = SearchResults(mode=hits.mode, hits=[hit.to_result() for hit in hits])
    return await rerank_results(resources.settings, query, found, limit) if resources.settings.rerank_url else found


def hits_to_ask(settings: Settings, limit: int) -> int:
    """The hits a search fetches to answer ``limit``: the reranker's top k when one orders them."""
    return max(limit, settings.rerank_top_k) if settings.rerank_url else limit


async def rerank_results(settings: Settings, query: str, found: SearchResults, limit: int) -> SearchResults:
    """``found``'s best ``limit`` hits in the reranker's order, or in their own, with a warning, when
    the reranker fails."""
    top = settings.rerank_top_k
    try:
        ordered = await rerank(settings, query, found.hits[:top])
    except RerankFailed as exc:
        warning = f"the reranker was skipped: {exc}"
        log.warning("%s; the search answered in its retrieval order", warning)
        return found.model_copy(update={"hits": found.hits[:limit], "warnings": [*found.warnings, warning]})
    return found.model_copy(update={"hits": (ordered + found.hits[top:])[:limit], "reranked": True})


def search_options(settings: Settings, mode: SearchMode | None = None) -> SearchOptions:
    """How a search ranks, from the settings (``mode`` overrides theirs)."""
    return SearchOptions(
        mode=mode or settings.search_mode, fusion=settings.search_fusion, dense_weight=settings.search_dense_weight,
        candidates=settings.search_candidates, rrf_k=settings.search_rrf_k,
    )
