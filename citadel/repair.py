"""``citadel verify``: compare every point id of the store with the registry, and repair.

The run's own check (:func:`citadel.consistency.reconcile`) samples; this compares every id.
Repairing deletes the points the registry does not know, marks the documents whose points are
missing, and indexes their sources again (their vectors come from the embedding cache where it
has them). Inline documents cannot be read again: they stay marked until they are sent again.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from citadel.consistency import awaiting_repair, repair_store, verify_store
from citadel.indexrun import index_source
from citadel.resources import Resources
from citadel.settings import Settings


def _readable_source(source: str) -> bool:
    """Whether a registered source key names files this machine can list again."""
    return bool(source) and (os.path.exists(source) or (any(ch in source for ch in "*?[") and bool(glob.glob(source, recursive=True))))


async def verify(settings: Settings, collection: str | None = None, *, repair: bool = False) -> list[dict[str, Any]]:
    """One report per collection (or only ``collection``): the full check, and with ``repair``
    what was deleted, marked and indexed again."""
    resources = Resources(settings)
    reports: list[dict[str, Any]] = []
    try:
        registry = await resources.registry()
        names = [c["collection"] for c in await registry.collection_stats()]
        if collection is not None:
            if collection not in names:
                from citadel.errors import ConfigurationError

                raise ConfigurationError(f"collection {collection!r} is not in the registry; known: {', '.join(names) or 'none'}")
            names = [collection]
        for name in names:
            check, missing, stray = await verify_store(resources, name)
            waiting = (await awaiting_repair(registry, name)).get(name, {})
            report: dict[str, Any] = {**check.as_dict(), "awaiting_repair": waiting}
            if repair and (missing or stray or waiting):
                await repair_store(resources, name, missing, stray)
                waiting = (await awaiting_repair(registry, name)).get(name, {})
                report["reindexed"] = []
                for source in sorted(waiting):
                    if _readable_source(source):
                        summary = await index_source(resources, source, name)
                        report["reindexed"].append(
                            {"source": source, **{key: summary[key] for key in ("repaired", "chunks_embedded", "cache_hits")}}
                        )
                after, _, _ = await verify_store(resources, name)
                report["after"] = {**after.as_dict(), "awaiting_repair": (await awaiting_repair(registry, name)).get(name, {})}
            reports.append(report)
    finally:
        await resources.aclose()
    return reports
