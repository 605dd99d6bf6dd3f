"""A deployment no worker serves: a run created through it stays Scheduled, as it is between its
creation and a worker's start, for as long as a test reads it."""

from __future__ import annotations

import uuid
from typing import Any

from prefect.client.orchestration import get_client


async def held_deployment(flow_name: str, parameters: dict[str, Any] | None = None) -> str:
    """A new deployment ``flow_name/held-...`` on the configured Prefect server, on no work pool."""
    name = f"held-{uuid.uuid4().hex[:8]}"
    async with get_client() as client:
        flow_id = await client.create_flow_from_name(flow_name)
        await client.create_deployment(flow_id=flow_id, name=name, parameters=parameters or {})
    return f"{flow_name}/{name}"


async def runs_of(deployment: str) -> list[Any]:
    """The flow runs created through ``deployment``, read back from the server."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    async with get_client() as client:
        found = await client.read_deployment_by_name(deployment)
        return await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id])))
