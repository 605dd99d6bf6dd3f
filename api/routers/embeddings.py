"""Embeddings through the same cache and backends as indexing, micro-batched across requests."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from api.errors import ERROR_RESPONSES, ApiError
from api.schemas import BatchRequest, BatchResponse, GenerateRequest, GenerateResponse
from api.security import require
from api.state import ServiceState, State

router = APIRouter(prefix="/embeddings", tags=["embeddings"], dependencies=[Depends(require("embeddings"))], responses={
    **ERROR_RESPONSES, 502: {"description": "The embedding backend failed"}})


def _check_lengths(state: ServiceState, texts: list[str]) -> None:
    limit = state.api.api_max_text_chars
    too_long = [index for index, text in enumerate(texts) if len(text) > limit]
    if too_long:
        raise ApiError(
            400, f"{len(too_long)} text(s) longer than {limit} characters (CITADEL_API_MAX_TEXT_CHARS); split them first",
            code="text_too_long", details={"indexes": too_long[:100]},
        )
    if any(not text.strip() for text in texts):
        raise ApiError(400, "a text is empty or only whitespace: nothing to embed", code="empty_text")


def vectors_json(body: dict[str, Any]) -> Response:
    """Vectors written straight from their float32 arrays: validating and converting hundreds of
    floats per vector through the response model would cost more than the rest of the request.
    The shape is the route's response model, which the contract tests check."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def _reads_the_cache(request: Request, asked: bool) -> bool:
    """Whether a request reads the shared embedding cache: only for a caller that reaches every
    collection. A hit (its flag, or its speed) says that someone embedded that exact text, and the
    cache holds every tenant's chunks, so a caller kept to some collections is always embedded afresh."""
    identity = getattr(request.state, "identity", None)
    return asked and identity is not None and identity.reaches_every_collection


@router.post("/generate", response_model=GenerateResponse, summary="Embed one text")
async def generate(body: GenerateRequest, state: State, request: Request) -> Response:
    started = time.perf_counter()
    _check_lengths(state, [body.text])
    result = await state.embedding.embed([body.text], body.model, use_cache=_reads_the_cache(request, body.cache_enabled))
    return vectors_json({
        "success": True, "embedding": result.vectors[0], "model": result.model, "dimensions": int(result.vectors.shape[1]),
        "cached": result.cached == 1, "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    })


@router.post("/batch", response_model=BatchResponse, summary="Embed many texts, in order")
async def batch(body: BatchRequest, state: State, request: Request) -> Response:
    started = time.perf_counter()
    if len(body.texts) > state.api.api_max_batch_texts:
        raise ApiError(
            400, f"{len(body.texts)} texts; at most {state.api.api_max_batch_texts} per request (CITADEL_API_MAX_BATCH_TEXTS)",
            code="batch_too_large",
        )
    _check_lengths(state, body.texts)
    result = await state.embedding.embed(body.texts, body.model, use_cache=_reads_the_cache(request, body.cache_enabled))
    return vectors_json({
        "success": True, "embeddings": result.vectors, "model": result.model, "dimensions": int(result.vectors.shape[1]),
        "cached_count": result.cached, "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    })
