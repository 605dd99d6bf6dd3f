"""An inverted index over an embedded collection's lexical vectors, for searching them fast.

qdrant-client's embedded mode scores a sparse query against every point in Python (about 170 ms at
5,000 points here); a server keeps an inverted index. This is that index for the embedded store:
built from the loaded collection on its first lexical search, kept until the store changes, and
scored as the server scores it (the query's terms, each weighted by its IDF over the collection's
points that have a lexical vector, times the document's stored weight).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from citadel.store.lexical import LEXICAL_VECTOR, SparseTerms

_SCROLL_PAGE = 2048


def lexical_vectors(client: QdrantClient, name: str) -> Iterator[tuple[str, models.SparseVector]]:
    """(point id, lexical vector) of every live point of an embedded collection.

    Read from the loaded collection's own lists when this qdrant-client keeps them as Citadel knows
    (0.2 s at 11,000 points, against 2 to 3 s through ``scroll``, which builds a record per point);
    through ``scroll`` otherwise. ``tests/core/test_search_modes.py`` checks both read the same.
    """
    collection = _local_collection(client, name)
    if collection is None:
        yield from _scrolled(client, name)
        return
    vectors, ids, deleted, absent = collection
    for index, vector in enumerate(vectors):
        if not deleted[index] and not absent[index]:
            yield str(ids[index]), vector


def _local_collection(client: QdrantClient, name: str) -> tuple[list[Any], list[Any], Any, Any] | None:
    """The embedded collection's lexical vectors, ids and deletion masks, or None where this
    qdrant-client lays them out otherwise (or the client is not embedded)."""
    try:
        collection = client._client._get_collection(name)  # type: ignore[attr-defined]
        vectors = collection.sparse_vectors[LEXICAL_VECTOR]
        ids, deleted = collection.ids_inv, collection.deleted
        absent = collection.deleted_per_vector[LEXICAL_VECTOR]
    except (AttributeError, KeyError, TypeError):
        return None
    if not (isinstance(vectors, list) and isinstance(ids, list) and len(vectors) == len(ids) <= len(deleted) and len(absent) >= len(ids)):
        return None
    return vectors, ids, deleted, absent


def _scrolled(client: QdrantClient, name: str) -> Iterator[tuple[str, models.SparseVector]]:
    offset = None
    while True:
        points, offset = client.scroll(name, limit=_SCROLL_PAGE, offset=offset, with_payload=False, with_vectors=[LEXICAL_VECTOR])
        for point in points:
            vector = point.vector.get(LEXICAL_VECTOR) if isinstance(point.vector, dict) else None
            if isinstance(vector, models.SparseVector):
                yield str(point.id), vector
        if offset is None:
            return


@dataclass(frozen=True)
class LexicalIndex:
    """Postings of one collection: for each term (sorted), the rows holding it and their weights."""

    ids: list[str]  # point id of each row
    terms: np.ndarray  # uint32, sorted, unique
    starts: np.ndarray  # postings of terms[i]: rows[starts[i]:starts[i + 1]]
    rows: np.ndarray
    weights: np.ndarray

    @classmethod
    def build(cls, client: QdrantClient, name: str) -> LexicalIndex:
        """Read every point's lexical vector from the loaded collection ``name``."""
        ids: list[str] = []
        all_terms: list[int] = []
        all_weights: list[float] = []
        lengths: list[int] = []
        for pid, vector in lexical_vectors(client, name):
            if not vector.indices:
                continue  # no words: no part in the statistics either, as on a server
            ids.append(pid)
            all_terms.extend(vector.indices)
            all_weights.extend(vector.values)
            lengths.append(len(vector.indices))
        if not ids:
            empty = np.zeros(0, dtype=np.uint32)
            return cls([], empty, np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32))
        term_array = np.array(all_terms, dtype=np.uint32)
        order = np.argsort(term_array, kind="stable")
        sorted_terms = term_array[order]
        terms, starts = np.unique(sorted_terms, return_index=True)
        rows = np.repeat(np.arange(len(ids), dtype=np.int32), lengths)
        return cls(
            ids, terms, np.append(starts, len(sorted_terms)).astype(np.int64),
            rows[order], np.array(all_weights, dtype=np.float32)[order],
        )

    def search(self, query: SparseTerms, limit: int, allowed: Collection[str] | None = None) -> list[tuple[str, float]]:
        """The ``limit`` best (point id, score) for ``query``; ``allowed``: only these point ids."""
        n = len(self.ids)
        if not n or not query or limit <= 0:
            return []
        scores = np.zeros(n, dtype=np.float32)
        for term, value in zip(query.indices, query.values, strict=True):
            at = int(np.searchsorted(self.terms, term))
            if at >= len(self.terms) or int(self.terms[at]) != term:
                continue
            start, end = int(self.starts[at]), int(self.starts[at + 1])
            idf = math.log((n - (end - start) + 0.5) / ((end - start) + 0.5) + 1)
            scores[self.rows[start:end]] += np.float32(value * idf) * self.weights[start:end]
        if allowed is not None:
            mask = np.fromiter((pid in allowed for pid in self.ids), dtype=bool, count=n)
            scores[~mask] = 0
        found = np.flatnonzero(scores > 0)
        if len(found) > limit:
            found = found[np.argpartition(-scores[found], limit - 1)[:limit]]
        found = found[np.argsort(-scores[found], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in found]
