"""Qdrant's REST API as Citadel calls it without qdrant-client: how a client is set up, where a
collection's calls go, and how the answers read. The probes (async) and the snapshot client
(sync) share these, so there is one way of talking to a server."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

COUNT_EXACT = {"exact": True}
"""The body of an exact ``points/count``."""


def rest_options(url: str, api_key: str | None, timeout_s: float) -> dict[str, Any]:
    """Keyword arguments of an httpx client for the server at ``url``: its key, its timeout, and
    certificates loaded only for https (loading the CA bundle costs about 30 ms, more than a call)."""
    return {
        "headers": {"api-key": api_key} if api_key else {},
        "timeout": timeout_s,
        "verify": url.lower().startswith("https://"),
    }


def collection_path(name: str) -> str:
    """``/collections/<name>``, the name quoted."""
    return f"/collections/{quote(name, safe='')}"


def result(answer: Any) -> Any:
    """The ``result`` of a JSON answer (a KeyError or TypeError when it has none)."""
    return answer["result"]


def collection_names(answer: Any) -> list[str]:
    """The collection names of a ``GET /collections`` answer."""
    return [str(c["name"]) for c in result(answer)["collections"]]


def alias_map(answer: Any) -> dict[str, str]:
    """Alias -> collection of a ``GET /aliases`` answer."""
    return {str(a["alias_name"]): str(a["collection_name"]) for a in result(answer)["aliases"]}


def point_count(answer: Any) -> int:
    """The count of a ``points/count`` answer."""
    return int(result(answer)["count"])
