"""Search in its three modes: ``dense`` (the embedding's nearest points), ``sparse`` (the query's
words, BM25-weighted) and ``hybrid`` (candidates of both, fused).

A server answers both legs of a hybrid search in one round trip (a batch of two queries); the
embedded store answers the dense leg itself and the lexical one from :class:`LexicalIndex`. The
legs are fused here, the same way for both stores (:mod:`citadel.store.fusion`), and a search by
document keeps each document's best point of the fused ranking.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qdrant_client import QdrantClient, models

from citadel.settings import SearchMode
from citadel.store.fusion import SearchOptions, fuse
from citadel.store.lexical import LEXICAL_VECTOR, SparseTerms, query_vector
from citadel.store.lexicalindex import LexicalIndex

log = logging.getLogger(__name__)


# Embedded stores' lexical indexes, by (store folder, collection); dropped when the store changes.
_INDEXES: dict[tuple[str, str], tuple[int, LexicalIndex]] = {}
_GENERATIONS: dict[str, int] = {}
_INDEX_LOCK = threading.Lock()
_said_dense: set[str] = set()


def store_changed(path_key: str) -> None:
    """An embedded store was written: its lexical indexes are rebuilt at their next search."""
    with _INDEX_LOCK:
        _GENERATIONS[path_key] = _GENERATIONS.get(path_key, 0) + 1


def lexical_index(client: QdrantClient, path_key: str, name: str) -> LexicalIndex:
    """The embedded collection's lexical index, built on first use after a change."""
    with _INDEX_LOCK:
        generation = _GENERATIONS.get(path_key, 0)
        cached = _INDEXES.get((path_key, name))
        if cached is not None and cached[0] == generation:
            return cached[1]
        index = LexicalIndex.build(client, name)
        _INDEXES[(path_key, name)] = (generation, index)
        return index


def point_ids(client: QdrantClient, name: str, scroll_filter: models.Filter | None = None, page: int = 4096) -> set[str]:
    """The ids of a collection's points (those matching ``scroll_filter``), scrolled a page at a time."""
    found: set[str] = set()
    offset = None
    while True:
        points, offset = client.scroll(name, scroll_filter=scroll_filter, limit=page, offset=offset, with_payload=False, with_vectors=False)
        found.update(str(point.id) for point in points)
        if offset is None:
            return found


def has_lexical(client: QdrantClient, name: str) -> bool:
    """Whether the collection (or the one its alias names) keeps lexical vectors."""
    sparse = client.get_collection(name).config.params.sparse_vectors or {}
    return LEXICAL_VECTOR in sparse


def mode_for(requested: SearchMode, lexical: bool, name: str) -> SearchMode:
    """``requested``, or dense for a collection written before lexical vectors (said once per collection)."""
    if requested == "dense" or lexical:
        return requested
    if name not in _said_dense:
        _said_dense.add(name)
        log.warning(
            "collection %s has no lexical vectors (it was indexed before them): searching it dense; "
            "`citadel index --blue-green` rebuilds it with them, reusing its embeddings", name,
        )
    return "dense"


@dataclass(frozen=True)
class Query:
    """One search as the store runs it."""

    vector: Sequence[float]
    text: str
    limit: int
    score_threshold: float | None
    filter: models.Filter | None
    by_document: bool
    options: SearchOptions

    @property
    def candidates(self) -> int:
        return max(self.options.candidates, self.limit * (5 if self.by_document else 1))


def search_dense(client: QdrantClient, name: str, query: Query, *, embedded: bool) -> list[tuple[str, float, dict[str, Any]]]:
    """The nearest points by the dense vector; by document, each document's nearest (a server groups
    them; embedded mode's grouping is a slow Python loop, so its nearest points are grouped here,
    asking for more until ``limit`` documents are found or the collection has no more)."""
    common: dict[str, Any] = {
        "query": [float(x) for x in query.vector], "score_threshold": query.score_threshold,
        "query_filter": query.filter, "with_payload": True,
    }
    if not query.by_document:
        points = client.query_points(name, limit=query.limit, **common).points
    elif not embedded:
        grouped = client.query_points_groups(name, group_by="document_id", group_size=1, limit=query.limit, **common)
        points = [group.hits[0] for group in grouped.groups if group.hits]
    else:
        asked = query.candidates
        while True:
            nearest = client.query_points(name, limit=asked, **common).points
            points = best_per_document(nearest, query.limit)
            if len(points) >= query.limit or len(nearest) < asked:
                break
            asked *= 4
    return [(str(p.id), float(p.score), p.payload or {}) for p in points]


def best_per_document(points: Sequence[Any], limit: int) -> list[Any]:
    """The first point of each document in ``points`` (best first), ``limit`` of them at most."""
    seen: set[Any] = set()
    kept = []
    for point in points:
        document = (point.payload or {}).get("document_id")
        if document in seen:
            continue
        seen.add(document)
        kept.append(point)
        if len(kept) >= limit:
            break
    return kept


def _server_legs(client: QdrantClient, name: str, query: Query, terms: SparseTerms, mode: SearchMode) -> list[list[Any]]:
    requests = []
    if mode == "hybrid":
        requests.append(models.QueryRequest(
            query=[float(x) for x in query.vector], filter=query.filter, limit=query.candidates, with_payload=True,
        ))
    requests.append(models.QueryRequest(
        query=models.SparseVector(indices=terms.indices, values=terms.values), using=LEXICAL_VECTOR,
        filter=query.filter, limit=query.candidates, with_payload=True,
    ))
    return [response.points for response in client.query_batch_points(name, requests=requests)]


def _embedded_legs(
    client: QdrantClient, path_key: str, name: str, query: Query, terms: SparseTerms, mode: SearchMode
) -> list[list[Any]]:
    legs: list[list[Any]] = []
    if mode == "hybrid":
        legs.append(client.query_points(
            name, query=[float(x) for x in query.vector], query_filter=query.filter, limit=query.candidates, with_payload=True,
        ).points)
    allowed = point_ids(client, name, query.filter) if query.filter is not None else None
    found = lexical_index(client, path_key, name).search(terms, query.candidates, allowed)
    records = {str(r.id): r for r in client.retrieve(name, ids=[pid for pid, _ in found], with_payload=True)} if found else {}
    legs.append([
        models.ScoredPoint(id=pid, version=0, score=score, payload=records[pid].payload) for pid, score in found if pid in records
    ])
    return legs


def search_fused(
    client: QdrantClient, name: str, query: Query, mode: SearchMode, *, path_key: str | None
) -> list[tuple[str, float, dict[str, Any]]]:
    """A sparse or hybrid search: the legs' candidates, fused (hybrid), by document or by point."""
    terms = query_vector(query.text)
    if not terms:
        return [] if mode == "sparse" else search_dense(client, name, query, embedded=path_key is not None)
    if path_key is None:
        legs = _server_legs(client, name, query, terms, mode)
    else:
        legs = _embedded_legs(client, path_key, name, query, terms, mode)
    payloads = {str(p.id): p.payload or {} for leg in legs for p in leg}
    ranked = [[(str(p.id), float(p.score)) for p in leg] for leg in legs]
    if mode == "hybrid":
        weights = (query.options.dense_weight, 1 - query.options.dense_weight)
        order = fuse(query.options.fusion, ranked, weights, query.options.rrf_k)
    else:
        order = ranked[0]
    out: list[tuple[str, float, dict[str, Any]]] = []
    documents: set[Any] = set()
    for pid, score in order:
        if query.score_threshold is not None and score < query.score_threshold:
            break
        payload = payloads[pid]
        if query.by_document:
            if payload.get("document_id") in documents:
                continue
            documents.add(payload.get("document_id"))
        out.append((pid, score, payload))
        if len(out) >= query.limit:
            break
    return out
