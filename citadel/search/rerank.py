"""An optional rerank stage: the best hits of a search scored again by a cross-encoder behind a
TEI-compatible ``POST /rerank`` (Text Embeddings Inference; Infinity's Cohere-style answer is read
too), off unless ``CITADEL_RERANK_URL`` is set.

A reranker reads the query and each passage together, which a retriever cannot afford over a whole
collection, so it reorders only the top ``CITADEL_RERANK_TOP_K``. It is an improvement, never a
dependency: when it fails or is slow, the search answers in its retrieval order and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from citadel.models import SearchHit
from citadel.settings import Settings, masked_url, secret


class RerankFailed(Exception):
    """The reranker did not answer usefully; the message says how, without secrets."""


def _scores(answer: Any, count: int) -> list[float]:
    """Scores by passage position from TEI's ``[{index, score}]`` or Cohere's ``{results: [{index, relevance_score}]}``."""
    items = answer.get("results") if isinstance(answer, dict) else answer
    if not isinstance(items, list):
        raise RerankFailed("its answer is not a list of scores")
    scores: list[float | None] = [None] * count
    for item in items:
        if not isinstance(item, dict):
            raise RerankFailed("its answer is not a list of scores")
        index, score = item.get("index"), item.get("score", item.get("relevance_score"))
        if not isinstance(index, int) or not 0 <= index < count or not isinstance(score, int | float):
            raise RerankFailed(f"its answer has an entry without a valid index and score: {str(item)[:80]}")
        scores[index] = float(score)
    if any(score is None for score in scores):
        raise RerankFailed(f"it scored {sum(s is not None for s in scores)} of {count} passages")
    return [float(score) for score in scores if score is not None]


async def rerank(settings: Settings, query: str, hits: Sequence[SearchHit], client: httpx.AsyncClient | None = None) -> list[SearchHit]:
    """``hits`` reordered by the reranker's scores (each hit's score becomes its reranker score).
    Raises :class:`RerankFailed` when it cannot."""
    if not hits or not settings.rerank_url:
        return list(hits)
    url = settings.rerank_url.rstrip("/") + "/rerank"
    key = secret(settings.rerank_api_key)
    body = {"query": query, "texts": [hit.text or "" for hit in hits], "truncate": True, "raw_scores": False}
    own = client is None
    http = client or httpx.AsyncClient(timeout=settings.rerank_timeout_s)
    try:
        response = await http.post(url, json=body, headers={"Authorization": f"Bearer {key}"} if key else {})
        if response.status_code >= 400:
            raise RerankFailed(f"{masked_url(url)} answered {response.status_code}")
        scores = _scores(response.json(), len(hits))
    except httpx.TimeoutException as exc:
        raise RerankFailed(f"{masked_url(url)} did not answer within {settings.rerank_timeout_s:g} s") from exc
    except (httpx.HTTPError, ValueError) as exc:
        raise RerankFailed(f"{masked_url(url)} could not be reached ({type(exc).__name__})") from exc
    finally:
        if own:
            await http.aclose()
    order = sorted(range(len(hits)), key=lambda i: -scores[i])
    return [hits[i].model_copy(update={"score": scores[i]}) for i in order]
