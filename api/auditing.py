"""One call for a route or a check to put a request in the audit trail: who (the identity the request
authenticated as, else ``anonymous``), from which address, what and of what, and whether it was
refused. Written in the background, so a refusal answers as fast as a miss; never a secret."""

from __future__ import annotations

from fastapi import Request

from api.state import ServiceState


def actor_of(request: Request) -> str:
    """The caller as the trail names it: ``key:<id>``, ``jwt:<subject>``, or ``anonymous``."""
    identity = getattr(request.state, "identity", None) or getattr(request.state, "authenticated", None)
    return identity.subject if identity is not None else "anonymous"


def audit(request: Request, state: ServiceState, action: str, *, target: str = "", outcome: str = "ok", detail: str = "") -> None:
    """Append a line for ``request``; a service whose registry is not open yet records nothing."""
    trail = getattr(state, "audit", None)
    if trail is None:
        return
    address = getattr(request.state, "client_address", None) or (request.client.host if request.client else "")
    trail.record_soon(actor_of(request), action, target=target, outcome=outcome, address=address, detail=detail)
