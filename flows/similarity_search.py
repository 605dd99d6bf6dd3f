"""Embed a query and return the nearest chunks of a collection."""

from __future__ import annotations

from typing import Any

from prefect import flow, tags

from citadel.models import SearchResults
from citadel.resources import open_resources
from citadel.search import check_query, hits_to_ask
from flows.parameters import ByDocument, Collection, Embedder, Filters, Limit, Mode, Query, Threshold
from tasks.embedding import embed_query
from tasks.reporting import report_search, run_tags, tag_flow_run
from tasks.run_names import flow_run_namer
from tasks.runsettings import run_settings
from tasks.search import rerank_hits, search_vectors


@flow(
    name="similarity-search",
    flow_run_name=flow_run_namer("similarity-search"),
    persist_result=True,  # as JSON: run_deployment(...).state.result() gives the caller its hits
    result_serializer="json",
)
async def similarity_search(
    query: Query,
    collection: Collection = None,
    limit: Limit = 10,
    score_threshold: Threshold = None,
    filters: Filters = None,
    embedder: Embedder = None,
    by_document: ByDocument = False,
    mode: Mode = None,
) -> dict[str, Any]:
    """The best hits for a query and the mode that ranked them (citadel.models.SearchResults as
    JSON: ``mode``, and ``hits`` best first, each with its document's title, page or section and URI).

    Args:
        query: What to search for, in words.
        collection: The collection to search; default CITADEL_COLLECTION.
        limit: How many hits, at most.
        score_threshold: The lowest similarity a hit may have.
        filters: Payload fields a hit must match, such as document_id or source.
        embedder: The embedder to use instead of the worker's configured one (the collection's model).
        by_document: Each document's best chunk only: `limit` documents rather than chunks.
        mode: dense (the embedding's nearest chunks), sparse (the query's words, BM25) or hybrid
            (both, fused); default the worker's search_mode setting (hybrid).
    """
    check_query(query)
    settings = await run_settings(embedder)
    collection = collection or settings.collection
    labels = run_tags(settings, collection)
    await tag_flow_run(labels)
    async with open_resources(settings) as resources:
        with tags(*labels):
            vector = await embed_query.with_options(task_run_name="embed the query")(settings, query, resources.embedder.model)
            asked = hits_to_ask(settings, limit)
            search = search_vectors.with_options(task_run_name=f"search {collection} for {limit} hits")
            found = await search(settings, collection, vector, asked, score_threshold, filters, by_document, query, mode)
            if settings.rerank_url:
                found = await rerank_hits.with_options(task_run_name=f"rerank the best {settings.rerank_top_k}")(
                    settings, query, found, limit
                )
    await report_search(query, collection, SearchResults.model_validate(found))
    return found
