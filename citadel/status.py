"""What is indexed where: registry counts beside the vector store's own counts."""

from __future__ import annotations

from typing import Any

from citadel.resources import Resources
from citadel.settings import Settings


async def collect_status(settings: Settings, runs: int = 10, dead_letters: int = 50) -> dict[str, Any]:
    """Per collection documents, chunks and vectors; the last runs; the newest dead letters."""
    resources = Resources(settings)
    try:
        registry = await resources.registry()
        collections = await registry.collection_stats()
        for entry in collections:
            entry["vectors"] = await resources.store.count(entry["collection"])
        return {
            "collections": collections,
            "runs": await registry.recent_runs(runs),
            "dead_letters": await registry.dead_letters(limit=dead_letters),
        }
    finally:
        await resources.aclose()
