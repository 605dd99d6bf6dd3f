"""``citadel setup``'s block documents: one per backend it is configured with, all called
:data:`BLOCKS`, which the deployments name (``CITADEL_BLOCKS`` in prefect.yaml's work pool), so an
operator reconfigures every deployed run by editing a block in the Prefect UI."""

from __future__ import annotations

from prefect.exceptions import ObjectAlreadyExists

from blocks.fromsettings import blocks_for
from citadel.settings import Settings

BLOCKS = "citadel"
"""The name of the block documents ``citadel setup`` saves and the deployments read."""


async def save_blocks(settings: Settings, name: str = BLOCKS) -> list[str]:
    """Save a block for each backend ``settings`` names, leaving one that exists as it is (an
    operator may have edited it); what was done, one line each, never a secret."""
    done: list[str] = []
    for block in blocks_for(settings):
        slug = f"{block.get_block_type_slug()}/{name}"
        try:
            await block.save(name, overwrite=False)
            done.append(f"saved block {slug}")
        except (ObjectAlreadyExists, ValueError) as exc:  # Prefect refuses an existing name with ValueError
            if isinstance(exc, ValueError) and "already in use" not in str(exc):
                raise
            done.append(f"block {slug} already exists: left as it is")
    if done:
        done.append(f"deployed runs read blocks called {name!r} (CITADEL_BLOCKS={name}, set for the work pool in prefect.yaml)")
    return done
