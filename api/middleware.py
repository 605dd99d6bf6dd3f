"""The outermost layer of every response: a request id, the OWASP secure headers, body and
media-type limits, HTTP metrics, and a safe 500 for anything unexpected. Pure ASGI, so that
streaming and lifespan pass untouched and the cost per request stays small.

A body is read only once its route's credentials and rate limit have passed (an anonymous
caller is refused on its headers), and it reaches the app only when it nests no deeper than
CITADEL_MAX_NESTING_DEPTH: the one bound on nesting for every route. What it answers itself (401,
429, 400, 413, 415, 500) goes through the app's CORS policy, as the app's own answers do."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics
from api.errors import error_response
from api.security import authenticates, refuse_before_body, route_of
from citadel import logs
from citadel.nesting import DEFAULT_MAX_DEPTH, json_depth_exceeds, too_deep

log = logging.getLogger("citadel.api")
access = logging.getLogger("citadel.api.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# The OWASP Secure Headers project's current recommendations for an API that serves JSON only.
SECURE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"require-corp"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"accelerometer=(), camera=(), geolocation=(), gyroscope=(), microphone=(), payment=(), usb=()"),
    (b"x-permitted-cross-domain-policies", b"none"),
    (b"cache-control", b"no-store"),
]
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


class TooLarge(Exception):
    pass


class ServiceMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, tls: bool = False, max_depth: int | None = None, cors: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.cors = dict(cors or {})  # the CORSMiddleware options of the app inside
        self.max_body_bytes = max_body_bytes
        self.max_depth = max_depth  # None: the service's CITADEL_MAX_NESTING_DEPTH
        self.too_large = f"the body is larger than {max_body_bytes} bytes (CITADEL_API_MAX_BODY_BYTES)"
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        logs.REQUEST_ID.set(request_id)  # log lines of this request carry its id
        extra = [*SECURE_HEADERS, (b"x-request-id", request_id.encode())]
        if self.tls or scope.get("scheme") == "https":
            extra.append(HSTS)
        started = time.perf_counter()
        status = 500
        response_started = False
        refused_body = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if refused_body:
                return  # the 413 has been sent; what the app says after reading a cut body is dropped
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                rate = scope["state"].get("rate_limit_headers") or {}
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in extra if k not in names),
                    *((k.lower().encode(), v.encode()) for k, v in rate.items() if k.lower().encode() not in names),
                ]
            await send(message)

        async def answer(response: ASGIApp) -> None:
            """Send a response of this middleware's own, with the CORS headers the app's would carry."""
            await (CORSMiddleware(response, **self.cors) if self.cors else response)(scope, receive, send_with_headers)

        async def simple(status_code: int, code: str, message: str) -> None:
            await answer(error_response(status_code, code, message, request_id))

        metrics.IN_FLIGHT.inc()
        try:
            method = scope["method"]
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                await simple(413, "payload_too_large", self.too_large)
                return
            has_body = (length is not None and length != b"0") or b"transfer-encoding" in headers
            if method in ("POST", "PUT", "PATCH") and has_body:
                media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
                if media != b"application/json" and not media.endswith(b"+json"):
                    await simple(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
                    return
            received = 0

            async def limited_receive() -> Message:
                nonlocal received, refused_body
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        # A body without Content-Length (chunked) outgrew the limit while being read.
                        if not response_started:
                            await simple(413, "payload_too_large", self.too_large)
                        refused_body = True
                        raise TooLarge
                return message

            app_receive: Receive = limited_receive
            app = scope.get("app")
            target = route_of(app, scope) if has_body and isinstance(app, Starlette) else None
            if target is not None and isinstance(app, Starlette):
                # Credentials and the rate limit are checked on the headers, before the body is read;
                # the body is then read whole (it is bounded) and its nesting checked before anything parses it.
                scope["route"] = target  # as the router sets it: what is refused here is counted under its route
                refusal = await refuse_before_body(scope) if authenticates(target) else None
                if refusal is not None:
                    await answer(refusal)
                    return
                try:
                    body = await _read_body(limited_receive)
                except TooLarge:
                    return  # answered with 413
                if body is None:
                    status = 499  # the client went away before sending its body: nobody to answer
                    return
                limit = self.max_depth or _configured_depth(app)
                if json_depth_exceeds(body.decode("utf-8", "replace"), limit):
                    await simple(400, "bad_request", too_deep("the body", limit))
                    return
                app_receive = _replay(body, receive)
            try:
                await self.app(scope, app_receive, send_with_headers)
            except TooLarge:
                pass  # answered with 413 as the body was read
            except Exception:  # noqa: BLE001 - logged with its traceback here; the caller gets a plain 500
                log.exception("unhandled error serving %s %s (request %s)", method, _route(scope), request_id)
                if not response_started:
                    await simple(500, "internal_error", "the request failed; the service log has the cause")
        finally:
            metrics.IN_FLIGHT.dec()
            route = _route(scope)
            seconds = time.perf_counter() - started
            metrics.REQUESTS.labels(route, scope["method"], str(status)).inc()
            metrics.LATENCY.labels(route, scope["method"]).observe(seconds)
            # The access line, with the request's id (uvicorn's own has none): the path without its query.
            access.info("%s %s %d %.1fms", scope["method"], scope.get("path", ""), status, seconds * 1000)
            if status == 429:
                metrics.RATE_LIMITED.labels(route).inc()


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None when the client disconnected first."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then passes on (a disconnect, later)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


def _configured_depth(app: Starlette) -> int:
    """CITADEL_MAX_NESTING_DEPTH of the service ``app`` serves (the default without one)."""
    service = getattr(app.state, "service", None)
    settings = getattr(service, "settings", None)
    return int(getattr(settings, "max_nesting_depth", DEFAULT_MAX_DEPTH))


def _route(scope: dict[str, Any] | Scope) -> str:
    """The matched route's template (never the raw path: ids would make labels unbounded)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
