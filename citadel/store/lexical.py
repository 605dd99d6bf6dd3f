"""Lexical vectors: a chunk's words as a sparse vector of BM25 term weights, stored beside its dense
vector so that a search can find the exact words a query uses (names, codes, rare terms) as well
as what it means.

Words are lowercased ``\\w+`` runs, English stopwords dropped, stemmed by Snowball's English
stemmer (PyStemmer); a term's id is the CRC32 of its stem. A document's value for a term is BM25's
saturated term frequency; the inverse document frequency is the store's (Qdrant's ``IDF``
modifier), so it stays right as documents come and go. A query's terms weigh 1 each.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import Stemmer
from qdrant_client import models

LEXICAL_VECTOR = "lexical"
"""The name of the sparse vector in a Citadel collection (the dense one is unnamed)."""

K1 = 1.2
B = 0.75
AVERAGE_TERMS = 100
"""A chunk's terms on average (1,000 characters of prose keep about this many once stopwords go);
fixed so that a chunk's weights never depend on which batch it was written in."""

_WORD = re.compile(r"\w+")
# The common English function words (NLTK's list, without the contractions' fragments).
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but by
can could did do does doing down during each few for from further had has have having he her here hers herself him
himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or other
our ours ourselves out over own same she should so some such than that the their theirs them themselves then there
these they this those through to too under until up very was we were what when where which while who whom why will
with would you your yours yourself yourselves
""".split())


@dataclass(frozen=True)
class SparseTerms:
    """A sparse vector: term ids (ascending) and their weights."""

    indices: list[int]
    values: list[float]

    def __bool__(self) -> bool:
        return bool(self.indices)


_local = threading.local()  # a Stemmer must not be shared by threads, and writes run in worker threads


@lru_cache(maxsize=200_000)
def _term_id(word: str) -> int:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = Stemmer.Stemmer("english")
    return zlib.crc32(stemmer.stemWord(word).encode("utf-8"))


def terms(text: str) -> list[int]:
    """The term ids of ``text``'s words, in order, stopwords left out."""
    return [_term_id(word) for word in _WORD.findall(text.lower()) if word not in STOPWORDS]


def document_vector(text: str) -> SparseTerms:
    """A chunk's BM25 term weights (the store multiplies in each term's IDF at search time)."""
    counts = Counter(terms(text))
    if not counts:
        return SparseTerms([], [])
    norm = K1 * (1 - B + B * sum(counts.values()) / AVERAGE_TERMS)
    indices = sorted(counts)
    return SparseTerms(indices, [counts[t] * (K1 + 1) / (counts[t] + norm) for t in indices])


def query_vector(text: str) -> SparseTerms:
    """A query's terms, each once, weight 1 (a repeated word does not outweigh the others)."""
    indices = sorted(set(terms(text)))
    return SparseTerms(indices, [1.0] * len(indices))


def lexical_point(payload: dict[str, Any]) -> models.SparseVector:
    """The lexical vector of a point from its payload's chunk text."""
    text = payload.get("text")
    found = document_vector(text) if isinstance(text, str) else SparseTerms([], [])
    return models.SparseVector(indices=found.indices, values=found.values)
