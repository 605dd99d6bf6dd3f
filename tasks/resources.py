"""Backend clients for tasks, looked up by settings so that clients are never task inputs.

Async clients belong to one event loop, so each loop gets its own set; a flow opens them on
entry and closes them on exit with :func:`open_resources`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pydantic import SecretStr

from citadel.resources import Resources
from citadel.settings import Settings

_OPEN: dict[tuple[str, int], tuple[Resources, int]] = {}


def _key(settings: Settings) -> tuple[str, int]:
    # Secrets count too (two Redis URLs differing only in password are two caches); the key stays in memory.
    values = json.dumps(settings.model_dump(), sort_keys=True, default=_plain)
    return values, id(asyncio.get_running_loop())


def _plain(value: object) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def get_resources(settings: Settings) -> Resources:
    """The resources of ``settings`` on the running loop, built on first use."""
    key = _key(settings)
    if key not in _OPEN:
        _OPEN[key] = (Resources(settings), 0)
    return _OPEN[key][0]


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Share one set of clients among the tasks of a flow run and close them at its end."""
    key = _key(settings)
    resources, users = _OPEN.get(key, (None, 0))
    if resources is None:
        resources = Resources(settings)
    _OPEN[key] = (resources, users + 1)
    try:
        yield resources
    finally:
        resources, users = _OPEN[key]
        if users <= 1:
            del _OPEN[key]
            await resources.aclose()
        else:
            _OPEN[key] = (resources, users - 1)
