"""A workflow written as a plain Prefect flow that composes Citadel's tasks.

    python -m examples.python_flow docs "how are retries made safe?"
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from prefect import flow

from citadel.resources import open_resources
from citadel.settings import settings_for
from flows.index_corpus import index_corpus
from tasks.embedding import embed_query
from tasks.search import search_vectors


@flow(name="index-then-ask")
async def index_then_ask(source: str, question: str, collection: str = "handbook") -> dict[str, Any]:
    """Bring a collection up to date (a sub-flow), then answer a question from it (two tasks)."""
    summary = await index_corpus(source, collection=collection)
    settings = settings_for()
    async with open_resources(settings) as resources:
        vector = await embed_query(settings, question, resources.embedder.model)
        found = await search_vectors(settings, collection, vector, limit=3, text=question)
    return {"indexed": summary, "hits": found["hits"], "mode": found["mode"]}


if __name__ == "__main__":
    result = asyncio.run(index_then_ask(sys.argv[1], sys.argv[2]))
    for hit in result["hits"]:
        print(f"{hit['score']:.3f}  {hit['document_id']}  {hit['text'][:80]!r}")
