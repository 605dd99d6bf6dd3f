"""One-time preparation of a Prefect server for Citadel (``citadel setup``)."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

from blocks import BLOCK_TYPES
from citadel.settings import Settings
from tasks.limits import default_limit, ensure_limit


async def prepare_server(settings: Settings, pool: str = "citadel") -> dict[str, Any]:
    """Register every block type, create the process work pool and the embedder's concurrency limit.

    Safe to run again: what exists is left as it is.
    """
    actions: list[str] = []
    for block in BLOCK_TYPES:
        await block.aregister_type_and_schema()
    actions.append(f"registered {len(BLOCK_TYPES)} block types: {', '.join(b.get_block_type_slug() for b in BLOCK_TYPES)}")
    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            actions.append(f"created process work pool {pool!r}")
        except ObjectAlreadyExists:
            actions.append(f"work pool {pool!r} already exists")
    name = await ensure_limit(settings)
    if name is None:
        actions.append("no concurrency limit needed: the hashing embedder runs inside each process")
    else:
        actions.append(f"concurrency limit {name!r} is in place (created with {default_limit(settings)} slots if new)")
    return {"actions": actions, "pool": pool, "limit": name}
