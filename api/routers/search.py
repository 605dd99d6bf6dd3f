"""Similarity search straight through the core: no flow run per request.

A collection outside the caller's grants is answered as one that does not exist: the same 404, the
same body, after the same work (a search of a collection that cannot exist), and the same audit line written in the
background (a miss is audited too: the write would otherwise slow the caller's next request after a
refusal only), so that neither the answer nor its time tells a tenant which other tenants'
collections exist."""

from __future__ import annotations

import time
from typing import NoReturn

from fastapi import APIRouter, Depends, Request

from api.auditing import audit
from api.errors import ERROR_RESPONSES
from api.schemas import CollectionEntry, CollectionList, SearchRequest, SearchResponse
from api.security import Caller, require
from api.state import ServiceState, State
from citadel.collections import check_collection_name, versioned
from citadel.errors import CollectionNotFound
from citadel.search import search_with

# A valid collection name no index run makes (a version 0 is no version): what a refused search searches.
ABSENT = "citadel-absent__v0"

router = APIRouter(tags=["search"], dependencies=[Depends(require("search"))], responses={
    **ERROR_RESPONSES, 404: {"description": "No such collection (or none the credentials reach)"},
    409: {"description": "The collection was indexed with another model"}})


@router.post("/search", response_model=SearchResponse, summary="The chunks nearest to a query")
async def search(body: SearchRequest, state: State, identity: Caller, request: Request) -> SearchResponse:
    started = time.perf_counter()
    collection = body.collection or state.settings.collection
    if not identity.reaches(collection):
        await _as_missing(request, state, body, collection)
    try:
        found = await search_with(
            state.resources, body.query, collection, limit=body.limit, score_threshold=body.threshold, filters=body.filter,
            registered_only=True, by_document=body.group_by == "document", mode=body.mode,
        )
    except CollectionNotFound:  # the error handlers' 404
        audit(request, state, "search", target=collection, outcome="not_found", detail="no such collection")
        raise
    return SearchResponse(
        query=body.query, collection=collection, model=state.resources.embedder.model, mode=found.mode, hits=found.hits,
        reranked=found.reranked, warnings=found.warnings,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
    )


async def _as_missing(request: Request, state: ServiceState, body: SearchRequest, collection: str) -> NoReturn:
    """:class:`CollectionNotFound` for ``collection``, after the very work a miss does: the same
    search, of a collection no one can have (:data:`ABSENT`), whatever it finds thrown away. A bad
    name is its 400, as for any collection. The refusal is audited in the background."""
    check_collection_name(collection)
    try:
        await search_with(
            state.resources, body.query, ABSENT, limit=body.limit, score_threshold=body.threshold, filters=body.filter,
            registered_only=True, by_document=body.group_by == "document", mode=body.mode,
        )
    except Exception:  # noqa: BLE001, S110 - the probe's own outcome is never the answer
        pass
    audit(request, state, "search", target=collection, outcome="refused", detail="outside the key's grants")
    raise CollectionNotFound(collection)


@router.get("/search/collections", response_model=CollectionList, summary="The collections a search can name")
async def collections(state: State, identity: Caller) -> CollectionList:
    """The registry's collections that the caller reaches, a blue-green one by its alias (the name a
    search uses), with their models."""
    models = await (await state.resources.registry()).collection_models()
    named = {versioned(name) or name: model for name, model in models.items()}
    return CollectionList(
        collections=[CollectionEntry(name=name, model=model) for name, model in sorted(named.items()) if identity.reaches(name)],
        search_mode=state.settings.search_mode,
    )
