"""One-time preparation of a Prefect server for Citadel (``citadel setup``)."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.filesystems import LocalFileSystem

from blocks import BLOCK_TYPES
from citadel.settings import Settings
from deployments.automations import install_automations
from deployments.blocksetup import save_blocks
from tasks.limits import default_limit, ensure_limit

RESULTS_BLOCK = "citadel-results"


async def prepare_server(
    settings: Settings, pool: str = "citadel", result_storage: str | None = None, notify: str | None = None
) -> dict[str, Any]:
    """Register every block type, create the process work pool and the embedder's concurrency limit,
    and with ``result_storage`` save the folder where runs keep their results as a storage block;
    create the automations of deployments/automations.yaml (those that notify with ``notify``).

    Safe to run again: what exists is left as it is (the storage block is updated).
    """
    actions: list[str] = []
    if result_storage:
        await LocalFileSystem(basepath=result_storage).save(RESULTS_BLOCK, overwrite=True)
        actions.append(
            f"saved result storage {result_storage!r} as block local-file-system/{RESULTS_BLOCK}: set "
            f"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK=local-file-system/{RESULTS_BLOCK} for every worker, "
            "so that results are kept there and whoever reads them finds them"
        )
    for block in BLOCK_TYPES:
        await block.aregister_type_and_schema()
    actions.append(f"registered {len(BLOCK_TYPES)} block types: {', '.join(b.get_block_type_slug() for b in BLOCK_TYPES)}")
    actions += await save_blocks(settings)
    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            actions.append(f"created process work pool {pool!r}")
        except ObjectAlreadyExists:
            actions.append(f"work pool {pool!r} already exists")
        actions += await install_automations(client, notify)
    name = await ensure_limit(settings)
    if name is None:
        actions.append("no concurrency limit needed: the hashing embedder runs inside each process")
    else:
        actions.append(f"concurrency limit {name!r} is in place (created with {default_limit(settings)} slots if new)")
    return {"actions": actions, "pool": pool, "limit": name, "result_storage": result_storage}
