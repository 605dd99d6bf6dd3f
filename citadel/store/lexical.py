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
_TERM_IDS: dict[str, int] = {}  # word -> term id; a corpus's vocabulary is small (SciFact's: 60,000 words)
# Emptied when full: a growing corpus keeps adding words (numbers, names), so a larger bound only
# makes a long run's memory grow; restemming the common words after a reset takes milliseconds.
_TERM_IDS_MAX = 65_536


def _stemmer() -> Stemmer.Stemmer:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = Stemmer.Stemmer("english")
    return stemmer


def _word_counts(text: str) -> Counter[str]:
    counts = Counter(_WORD.findall(text.lower()))
    for word in STOPWORDS.intersection(counts):
        del counts[word]
    return counts


def _term_ids(words: list[str]) -> list[int]:
    """Each word's term id, stemming the words not seen before in one call."""
    global _TERM_IDS
    known = _TERM_IDS  # this call's own reference: a full cache is replaced, never cleared under another thread
    new = [word for word in words if word not in known]
    if new:
        for word, stem in zip(new, _stemmer().stemWords(new), strict=True):
            known[word] = zlib.crc32(stem.encode("utf-8"))
        if len(known) > _TERM_IDS_MAX:
            _TERM_IDS = {}
    return [known[word] for word in words]


def terms(text: str) -> list[int]:
    """The term ids of ``text``'s words, in order, stopwords left out."""
    words = [word for word in _WORD.findall(text.lower()) if word not in STOPWORDS]
    return _term_ids(words)


def document_vector(text: str) -> SparseTerms:
    """A chunk's BM25 term weights (the store multiplies in each term's IDF at search time)."""
    words = _word_counts(text)
    if not words:
        return SparseTerms([], [])
    counts: dict[int, int] = {}
    for term, count in zip(_term_ids(list(words)), words.values(), strict=True):
        counts[term] = counts.get(term, 0) + count  # words that stem alike add up
    norm = K1 * (1 - B + B * sum(words.values()) / AVERAGE_TERMS)
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
    # Built without validation: the indices are sorted unique uint32 and the values floats by construction.
    return models.SparseVector.model_construct(indices=found.indices, values=found.values)
