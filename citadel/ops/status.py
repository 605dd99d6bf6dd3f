"""What is indexed where: registry counts beside the vector store's own counts, and the runs.

The store is looked at the cheap way (:mod:`citadel.store.probe`), so ``citadel status`` on a large
embedded store does not load it; runs whose process is gone are marked crashed on the way.
"""

from __future__ import annotations

from citadel.indexing import check_store
from citadel.indexing.bluegreen import layout
from citadel.models import StatusReport
from citadel.registry import mark_crashed_runs
from citadel.resources import Resources
from citadel.settings import Settings


async def collect_status(settings: Settings, runs: int = 10, dead_letters: int = 50) -> StatusReport:
    """Per collection documents, chunks, vectors and drift; the last runs (crashed ones marked);
    the newest dead letters."""
    resources = Resources(settings)
    try:
        registry = await resources.registry()
        crashed = await mark_crashed_runs(registry)
        collections = await registry.collection_stats()
        _, aliases = await layout(resources)
        for entry in collections:
            entry.aliases = sorted(alias for alias, target in aliases.items() if target == entry.collection)
            check = await check_store(resources, entry.collection)
            entry.vectors = check.points or 0
            entry.drift = check.drift or bool(entry.awaiting_repair)
            entry.missing, entry.stray = check.missing, check.stray
        return StatusReport(
            collections=collections,
            runs=await registry.recent_runs(runs),
            dead_letters=await registry.dead_letters(limit=dead_letters),
            crashed_runs=crashed,
        )
    finally:
        await resources.aclose()
