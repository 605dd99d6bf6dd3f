"""The readable name of each Citadel flow run, from its parameters: one rule for the flow's own
``flow_run_name`` and for every place that creates a run (CLI, ``/api/v1``, ``run_deployment``, a
sharded parent creating its shards), so a run carries its final name from its creation on,
in the REST answer, the worker's log and the UI, never a random one until it starts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

from citadel.settings import Settings


def _collection(parameters: Mapping[str, Any]) -> str:
    return str(parameters.get("collection") or Settings().collection)


def _index(parameters: Mapping[str, Any]) -> str:
    name = f"index-{_collection(parameters)}"
    shard, shards = parameters.get("shard"), parameters.get("shards")
    if shard is not None and shards:
        name += f"-shard-{int(shard) + 1}-of-{shards}"  # shards count from 0; names from 1, as people do
    return name


def _sharded(parameters: Mapping[str, Any]) -> str:
    return f"index-{_collection(parameters)}-in-{parameters.get('shards') or 2}-shards"


def _search(parameters: Mapping[str, Any]) -> str:
    return f"search-{_collection(parameters)}"


def _workflow(parameters: Mapping[str, Any]) -> str:
    workflow = parameters.get("workflow")
    workflow_id = workflow.get("workflow_id") if isinstance(workflow, Mapping) else None
    return f"workflow-{workflow_id or 'from-file'}"


def _embed(parameters: Mapping[str, Any]) -> str:
    return f"embed-{len(parameters.get('texts') or [])}-texts"


NAMERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "index-corpus": _index,
    "index-sharded": _sharded,
    "similarity-search": _search,
    "run-workflow": _workflow,
    "embed-texts": _embed,
}
"""Each Citadel flow's name rule, by flow name."""


def final_run_name(flow_name: str, parameters: Mapping[str, Any]) -> str | None:
    """The name a run of ``flow_name`` (``index-corpus`` or a deployment's ``index-corpus/nightly``)
    with ``parameters`` ends with; None for a flow that is not Citadel's (Prefect then names it)."""
    namer = NAMERS.get(flow_name.split("/", 1)[0])
    return namer(parameters) if namer else None


async def deployment_run_name(deployment: str, parameters: Mapping[str, Any]) -> str | None:
    """The final name of a run of ``deployment`` (``flow/name``) with ``parameters``, over the
    deployment's own parameters as the server merges them (a ``nightly`` deployment's collection
    names its runs); None for a flow that is not Citadel's, or a deployment the server lacks."""
    if deployment.split("/", 1)[0] not in NAMERS:
        return None
    async with get_client() as client:
        try:
            found = await client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            return None  # the caller's run_deployment says so, in its own words
    return final_run_name(deployment, {**(found.parameters or {}), **parameters})


def flow_run_namer(flow_name: str) -> Callable[[], str]:
    """A flow's ``flow_run_name``: the same rule, on the running flow's parameters."""
    namer = NAMERS[flow_name]

    def name() -> str:
        return namer(flow_run.parameters)

    return name
