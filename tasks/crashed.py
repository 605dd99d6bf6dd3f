"""Prefect's side of a crashed run: a flow run whose process was killed stays Running forever.

The registry finds such runs by their heartbeat (:mod:`citadel.registry.runlock`); this marks their flow
runs Crashed on the configured Prefect server, as Prefect would had it seen the process die.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

from citadel.models import IndexRunRecord

log = logging.getLogger(__name__)


async def mark_flow_runs_crashed(runs: Sequence[IndexRunRecord]) -> list[str]:
    """Set the flow runs of crashed index runs to Crashed where they are not final yet; returns
    their ids. Best effort: the registry's record is what counts, so failures are only logged."""
    marked: list[str] = []
    ids = [run.flow_run_id for run in runs if run.flow_run_id]
    if not ids:
        return marked
    try:
        async with get_client() as client:
            for flow_run_id in ids:
                try:
                    flow_run = await client.read_flow_run(uuid.UUID(flow_run_id))
                except (ObjectNotFound, ValueError):
                    continue
                if flow_run.state is not None and flow_run.state.is_final():
                    continue
                message = "the process running this flow run is gone (no heartbeat in Citadel's registry)"
                await client.set_flow_run_state(flow_run.id, Crashed(message=message), force=True)
                marked.append(flow_run_id)
    except Exception as exc:  # noqa: BLE001 - bookkeeping must never fail the caller
        log.warning("could not mark crashed flow runs %s in Prefect: %s", ", ".join(ids), exc)
    return marked
