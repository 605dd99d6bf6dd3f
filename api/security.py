"""Who is calling and what they may do: credentials, scopes, rate limits and admin networks.

The client address comes from ``X-Forwarded-For`` only when the peer is a trusted proxy (the
rightmost address that is not one of them); from anyone else the header is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api import metrics
from api.errors import ApiError
from api.state import ServiceState, state_of
from citadel.apisettings import Network
from citadel.auth import KEY_PREFIX, AuthError, Identity

bearer_scheme = HTTPBearer(auto_error=False, description="A JWT (`citadel token create` mints one for operators) or an API key.")
key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key: `citadel apikey create`.")


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _inside(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, nets: list[Network]) -> bool:
    return address is not None and any(address in net for net in nets)


def client_address(request: Request, trusted: list[Network]) -> str:
    """The caller's address: the peer, or behind trusted proxies the first untrusted hop."""
    peer = request.client.host if request.client else ""
    if not trusted or not _inside(_address(peer), trusted):
        return peer
    hops = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return peer  # a malformed chain: trust nothing in it
        if not _inside(address, trusted):
            return str(address)
    return peer


async def _rate_limit(request: Request, state: ServiceState, identity: str) -> None:
    address = _address(request.state.client_address)
    if _inside(address, state.exempt):
        return
    decision = await state.limiter.check(identity)
    request.state.rate_limit_headers = decision.headers
    if not decision.allowed:
        raise ApiError(429, "too many requests; wait for Retry-After seconds", headers=decision.headers)


async def authenticate(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    api_key: str | None = Depends(key_scheme),
) -> Identity:
    """The caller's identity from a bearer token or an API key; 401 otherwise. Refused attempts
    count against the client address's rate limit, so guessing keys is slow."""
    state = state_of(request)
    address = client_address(request, state.trusted_proxies)
    request.state.client_address = address
    try:
        authorization = request.headers.get("authorization")
        if authorization is not None and api_key:
            raise AuthError("ambiguous", "send one credential: either Authorization or X-API-Key, not both")
        if authorization is not None and bearer is None:
            raise AuthError("scheme", "the Authorization header must be `Bearer <token>`")
        if bearer is not None and bearer.credentials.startswith(KEY_PREFIX):
            # An API key as a bearer credential: what Prometheus and most HTTP clients can send.
            identity = await state.keys.authenticate(bearer.credentials)
        elif bearer is not None:
            identity = state.verifier.verify(bearer.credentials)
        elif api_key:
            identity = await state.keys.authenticate(api_key)
        else:
            hint = (
                "send `Authorization: Bearer <token>` or `X-API-Key: <key>`"
                if state.has_credentials_configured
                else "no API key exists yet: create one with `citadel apikey create --name NAME --scopes embeddings,search`"
            )
            raise AuthError("missing", f"authentication required: {hint}")
    except AuthError as exc:
        metrics.AUTH_FAILURES.labels(exc.reason).inc()
        await _rate_limit(request, state, f"addr:{address}")
        raise
    await _rate_limit(request, state, identity.subject)
    request.state.identity = identity
    return identity


def require(scope: str) -> Callable[..., Awaitable[Identity]]:
    """A dependency that lets through only identities with ``scope`` (admin has every scope)."""

    async def check(request: Request, identity: Identity = Depends(authenticate)) -> Identity:
        if not identity.allows(scope):
            held = ", ".join(sorted(identity.scopes)) or "none"
            raise ApiError(403, f"this route needs the {scope!r} scope; the credentials have {held}")
        if scope == "admin":
            state = state_of(request)
            address = _address(request.state.client_address)
            if _inside(address, state.admin_deny) or not _inside(address, state.admin_allow):
                raise ApiError(403, "admin routes are not served to this address (CITADEL_API_ADMIN_ALLOW / _DENY)")
        return identity

    check.__name__ = f"require_{scope}"
    return check
