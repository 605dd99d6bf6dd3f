"""Read Citadel's events back from a Prefect server's events API, as an operator's tooling would."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx


async def wait_for_events(
    api_url: str, event: str, resource_id: str, *, count: int = 1, timeout: float = 90.0
) -> list[dict[str, Any]]:
    """The events named ``event`` about ``resource_id`` once at least ``count`` have arrived (oldest
    first); events reach the server a moment after they are emitted, so this polls until a deadline."""
    body = {"filter": {"event": {"name": [event]}, "resource": {"id": [resource_id]}, "order": "ASC"}, "limit": 50}
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30) as client:
        while time.monotonic() < deadline:
            response = await client.post(f"{api_url}/events/filter", json=body)
            response.raise_for_status()
            found = response.json()["events"]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.5)
    raise AssertionError(f"{len(found)} of {count} {event} events about {resource_id} arrived in {timeout:.0f}s")


def related_of(event: dict[str, Any], role: str) -> list[dict[str, str]]:
    """The related resources of ``event`` in ``role`` (source, flow-run, collection, ...)."""
    return [r for r in event.get("related", []) if r.get("prefect.resource.role") == role]
