"""Who is calling and what they may do: credentials, scopes, rate limits and admin networks.

The client address comes from ``X-Forwarded-For`` only when the peer is a trusted proxy (the
rightmost address that is not one of them); from anyone else the header is ignored.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from api import metrics
from api.auditing import audit
from api.errors import ApiError, error_response
from api.state import ServiceState, State, service_state
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


async def _rate_limit(request: Request, state: ServiceState, identity: str, tier: str = "") -> None:
    """The service's limits for ``identity``, and its own ``tier`` (a key's) beside them; 429 when either is spent."""
    address = _address(request.state.client_address)
    if _inside(address, state.exempt):
        return
    decision = await state.limiter.check(identity, tier)
    request.state.rate_limit_headers = decision.headers
    if not decision.allowed:
        _audit_rate_limited(request, state, identity)
        raise ApiError(429, "too many requests; wait for Retry-After seconds", headers=decision.headers)


LIMITED_LINE_S = 60.0
"""A caller's 429s go into the audit trail at most once a minute per process, each line with the
count of those left out since the one before: a line per refusal would hand whoever floods the
service a write to the registry per request, which is what the limit spares it."""
_limited: dict[str, tuple[float, int]] = {}


def _audit_rate_limited(request: Request, state: ServiceState, caller: str) -> None:
    now = time.monotonic()
    since, skipped = _limited.get(caller, (-LIMITED_LINE_S, 0))
    if now - since < LIMITED_LINE_S:
        _limited[caller] = (since, skipped + 1)
        return
    if len(_limited) > 10_000:
        _limited.clear()
    _limited[caller] = (now, 0)
    more = f"; {skipped} more since the previous line" if skipped else ""
    audit(request, state, "rate_limit", target=target_of(request), outcome="refused", detail=f"rate limited{more}")


def target_of(request: Request) -> str:
    """What a request asked for, as the audit trail names it: its method and path (never its query)."""
    return f"{request.method} {request.url.path}"


async def authenticate(
    request: Request,
    state: State,
    bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    api_key: str | None = Depends(key_scheme),
) -> Identity:
    """The caller's identity from a bearer token or an API key; 401 otherwise. Refused attempts
    count against the client address's rate limit, so guessing keys is slow. A request with a body
    was authenticated before it was read (:func:`refuse_before_body`): that identity is taken as is."""
    early: Identity | None = getattr(request.state, "authenticated", None)
    if early is not None:
        request.state.identity = early
        return early
    return await _identify(request, state, bearer, api_key)


Caller = Annotated[Identity, Depends(authenticate)]
"""A route's parameter for the authenticated caller (401 without valid credentials)."""


async def _identify(
    request: Request, state: ServiceState, bearer: HTTPAuthorizationCredentials | None, api_key: str | None
) -> Identity:
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
        # The reason's code, never the credential: the caller is anonymous until it authenticates.
        audit(request, state, "authenticate", target=target_of(request), outcome="refused", detail=exc.reason)
        raise
    request.state.identity = identity  # a 429 is then the identity's, in the audit trail too
    await _rate_limit(request, state, identity.subject, identity.rate_limits)
    return identity


def route_of(app: Starlette, scope: Scope) -> BaseRoute | None:
    """The route that ``scope`` goes to; None when none takes it (the app answers 404 or 405)."""
    for route in app.router.routes:
        if route.matches(scope)[0] == Match.FULL:
            return route
    return None


def authenticates(route: BaseRoute) -> bool:
    """Whether ``route`` authenticates its caller (through :func:`authenticate`, at any depth)."""
    return isinstance(route, APIRoute) and _calls_authenticate(route.dependant)


def _calls_authenticate(dependant: Dependant) -> bool:
    return any(dep.call is authenticate or _calls_authenticate(dep) for dep in dependant.dependencies)


async def refuse_before_body(scope: Scope) -> Response | None:
    """The 401 or 429 for a request with a body to an authenticated route, decided from its headers
    before the body is read, so that an anonymous caller cannot make the service read a megabyte
    per attempt. None lets it through: the identity is kept for :func:`authenticate`, or, on an
    unexpected failure (a backend down), the route's own authentication meets and reports it."""
    request = Request(scope)
    request_id = scope.get("state", {}).get("request_id")
    try:
        state = await service_state(request)
        request.state.authenticated = await _identify(request, state, await bearer_scheme(request), await key_scheme(request))
    except AuthError as exc:
        return error_response(401, "unauthorized", str(exc), request_id, headers={"WWW-Authenticate": "Bearer"})
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, request_id, exc.details, exc.headers)
    except Exception:  # noqa: BLE001 - the route's own authentication runs again and reports it as usual
        return None
    return None


def require(scope: str) -> Callable[..., Awaitable[Identity]]:
    """A dependency that lets through only identities with ``scope`` (admin has every scope); a
    refusal goes into the audit trail, under the admin route's name for the admin scope."""

    async def check(request: Request, state: State, identity: Caller) -> Identity:
        action = admin_action(request) if scope == "admin" else "authorize"
        if not identity.allows(scope):
            held = ", ".join(sorted(identity.scopes)) or "none"
            audit(request, state, action, target=target_of(request), outcome="refused", detail=f"needs the {scope} scope")
            raise ApiError(403, f"this route needs the {scope!r} scope; the credentials have {held}")
        if scope == "admin":
            address = _address(request.state.client_address)
            if _inside(address, state.admin_deny) or not _inside(address, state.admin_allow):
                audit(request, state, action, target=target_of(request), outcome="refused", detail="outside the admin networks")
                raise ApiError(403, "admin routes are not served to this address (CITADEL_API_ADMIN_ALLOW / _DENY)")
        return identity

    check.__name__ = f"require_{scope}"
    return check


def admin_action(request: Request) -> str:
    """``admin.<operation id>`` of the admin route ``request`` goes to (its path without one)."""
    route = request.scope.get("route")
    name = getattr(route, "operation_id", None) or getattr(route, "path", None) or request.url.path
    return f"admin.{name}"
