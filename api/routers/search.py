"""Similarity search straight through the core: no flow run per request."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from api.errors import ERROR_RESPONSES
from api.schemas import CollectionEntry, CollectionList, SearchRequest, SearchResponse
from api.security import require
from api.state import State
from citadel.collections import versioned
from citadel.search import search_with

router = APIRouter(tags=["search"], dependencies=[Depends(require("search"))], responses={
    **ERROR_RESPONSES, 404: {"description": "No such collection"}, 409: {"description": "The collection was indexed with another model"}})


@router.post("/search", response_model=SearchResponse, summary="The chunks nearest to a query")
async def search(body: SearchRequest, state: State) -> SearchResponse:
    started = time.perf_counter()
    collection = body.collection or state.settings.collection
    # A collection the registry does not know is the core's CollectionNotFound: the error handlers' 404.
    found = await search_with(
        state.resources, body.query, collection, limit=body.limit, score_threshold=body.threshold, filters=body.filter,
        registered_only=True, by_document=body.group_by == "document", mode=body.mode,
    )
    return SearchResponse(
        query=body.query, collection=collection, model=state.resources.embedder.model, mode=found.mode, hits=found.hits,
        reranked=found.reranked, warnings=found.warnings,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
    )


@router.get("/search/collections", response_model=CollectionList, summary="The collections a search can name")
async def collections(state: State) -> CollectionList:
    """The registry's collections, a blue-green one by its alias (the name a search uses), with their models."""
    models = await (await state.resources.registry()).collection_models()
    named = {versioned(name) or name: model for name, model in models.items()}
    return CollectionList(
        collections=[CollectionEntry(name=name, model=model) for name, model in sorted(named.items())],
        search_mode=state.settings.search_mode,
    )
