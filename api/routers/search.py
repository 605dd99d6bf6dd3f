"""Similarity search straight through the core: no flow run per request."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from api.errors import ERROR_RESPONSES, ApiError
from api.schemas import SearchRequest, SearchResponse
from api.security import require
from api.state import State
from citadel.collections import check_collection_name
from citadel.indexing.bluegreen import serving
from citadel.search import search_with

router = APIRouter(tags=["search"], dependencies=[Depends(require("search"))], responses={
    **ERROR_RESPONSES, 404: {"description": "No such collection"}, 409: {"description": "The collection was indexed with another model"}})


@router.post("/search", response_model=SearchResponse, summary="The chunks nearest to a query")
async def search(body: SearchRequest, state: State) -> SearchResponse:
    started = time.perf_counter()
    collection = body.collection or state.settings.collection
    check_collection_name(collection)
    registry = await state.resources.registry()
    if await registry.collection(collection) is None and await registry.collection(await serving(state.resources, collection)) is None:
        raise ApiError(404, f"collection {collection!r} does not exist yet; index something into it first",
                       code="collection_not_found")
    hits = await search_with(
        state.resources, body.query, collection, limit=body.limit, score_threshold=body.threshold, filters=body.filter
    )
    return SearchResponse(
        query=body.query, collection=collection, model=state.resources.embedder.model, hits=hits,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
    )
