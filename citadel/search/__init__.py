"""Similarity search: a query checked, embedded and answered from the collection a name serves."""

from __future__ import annotations

from typing import TYPE_CHECKING

from citadel.exports import lazy_exports

if TYPE_CHECKING:
    from citadel.search.query import check_query, hits_to_ask, rerank_results, search, search_options, search_with

__all__ = [
    "check_query",
    "hits_to_ask",
    "rerank_results",
    "search",
    "search_options",
    "search_with",
]

__getattr__ = lazy_exports(__name__, {
    "check_query": "query",
    "hits_to_ask": "query",
    "rerank_results": "query",
    "search": "query",
    "search_options": "query",
    "search_with": "query",
})
