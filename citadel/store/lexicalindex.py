"""An inverted index over an embedded collection's lexical vectors, for searching them fast.

qdrant-client's embedded mode scores a sparse query against every point in Python (about 170 ms at
5,000 points here); a server keeps an inverted index. This is that index for the embedded store:
built from the loaded collection on its first lexical search, kept until the store changes, and
scored as the server scores it (the query's terms, each weighted by its IDF over the collection's
points that have a lexical vector, times the document's stored weight).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
from qdrant_client import QdrantClient, models

from citadel.store.lexical import LEXICAL_VECTOR, SparseTerms

_SCROLL_PAGE = 2048


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
        term_parts: list[np.ndarray] = []
        row_parts: list[np.ndarray] = []
        weight_parts: list[np.ndarray] = []
        offset = None
        while True:
            points, offset = client.scroll(name, limit=_SCROLL_PAGE, offset=offset, with_payload=False, with_vectors=[LEXICAL_VECTOR])
            for point in points:
                vector = point.vector.get(LEXICAL_VECTOR) if isinstance(point.vector, dict) else None
                if not isinstance(vector, models.SparseVector) or not vector.indices:
                    continue  # no words: no part in the statistics either, as on a server
                row = len(ids)
                ids.append(str(point.id))
                term_parts.append(np.asarray(vector.indices, dtype=np.uint32))
                weight_parts.append(np.asarray(vector.values, dtype=np.float32))
                row_parts.append(np.full(len(vector.indices), row, dtype=np.int32))
            if offset is None:
                break
        if not ids:
            empty = np.zeros(0, dtype=np.uint32)
            return cls([], empty, np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32))
        all_terms = np.concatenate(term_parts)
        order = np.argsort(all_terms, kind="stable")
        sorted_terms = all_terms[order]
        terms, starts = np.unique(sorted_terms, return_index=True)
        return cls(
            ids, terms, np.append(starts, len(sorted_terms)).astype(np.int64),
            np.concatenate(row_parts)[order], np.concatenate(weight_parts)[order],
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
