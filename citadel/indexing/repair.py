"""``citadel verify``: compare every point id of the store with the registry, and repair.

The run's own check (:func:`citadel.indexing.consistency.reconcile`) samples; this compares every id.
Repairing deletes the points the registry does not know, marks the documents whose points are
missing, and indexes their sources again (their vectors come from the embedding cache where it
has them). Inline documents cannot be read again: they stay marked until they are sent again.
"""

from __future__ import annotations

import glob
import os

from citadel.errors import ConfigurationError
from citadel.indexing.bluegreen import live_collection
from citadel.indexing.consistency import awaiting_repair, repair_store, verify_store
from citadel.indexing.run import index_source
from citadel.models import VerifyReport
from citadel.resources import Resources
from citadel.settings import Settings


def _readable_source(source: str) -> bool:
    """Whether a registered source key names files this machine can list again."""
    return bool(source) and (os.path.exists(source) or (any(ch in source for ch in "*?[") and bool(glob.glob(source, recursive=True))))


async def verify(settings: Settings, collection: str | None = None, *, repair: bool = False) -> list[VerifyReport]:
    """One report per collection (or only ``collection``): the full check, and with ``repair``
    what was deleted, marked and indexed again, and the check after."""
    resources = Resources(settings)
    reports: list[VerifyReport] = []
    try:
        registry = await resources.registry()
        names = [c.collection for c in await registry.collection_stats()]
        if collection is not None:
            if collection not in names:  # a blue-green alias: its live version
                collection = await live_collection(resources, collection)
            if collection not in names:
                raise ConfigurationError(f"collection {collection!r} is not in the registry; known: {', '.join(names) or 'none'}")
            names = [collection]
        for name in names:
            check, missing, stray = await verify_store(resources, name)
            report = VerifyReport(check=check, awaiting_repair=(await awaiting_repair(registry, name)).get(name, {}))
            if repair and (missing or stray or report.awaiting_repair):
                await repair_store(resources, name, missing, stray)
                waiting = (await awaiting_repair(registry, name)).get(name, {})
                report.reindexed = [await index_source(resources, source, name) for source in sorted(waiting) if _readable_source(source)]
                after, _, _ = await verify_store(resources, name)
                report.after = VerifyReport(check=after, awaiting_repair=(await awaiting_repair(registry, name)).get(name, {}))
            reports.append(report)
    finally:
        await resources.aclose()
    return reports
