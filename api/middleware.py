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
from starlette.routing import BaseRoute
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
        exchange = _Exchange(self, scope, receive, send)
        metrics.IN_FLIGHT.inc()
        try:
            await self._serve(exchange)
        finally:
            metrics.IN_FLIGHT.dec()
            exchange.record()

    async def _serve(self, exchange: _Exchange) -> None:
        """Refuse on the headers what can be refused there, admit the body, then run the app."""
        scope = exchange.scope
        refusal = self._refusal_on_headers(exchange)
        if refusal is not None:
            await exchange.simple(*refusal)
            return
        app_receive: Receive = exchange.limited_receive
        app = scope.get("app")
        target = route_of(app, scope) if exchange.has_body and isinstance(app, Starlette) else None
        if target is not None and isinstance(app, Starlette):
            admitted = await self._admit_body(exchange, app, target)
            if admitted is None:
                return  # answered, or the client went away
            app_receive = admitted
        try:
            await self.app(scope, app_receive, exchange.send)
        except TooLarge:
            pass  # answered with 413 as the body was read
        except Exception:  # noqa: BLE001 - logged with its traceback here; the caller gets a plain 500
            log.exception("unhandled error serving %s %s (request %s)", scope["method"], _route(scope), exchange.request_id)
            if not exchange.response_started:
                await exchange.simple(500, "internal_error", "the request failed; the service log has the cause")

    def _refusal_on_headers(self, exchange: _Exchange) -> tuple[int, str, str] | None:
        """The 413 of a declared length over the limit, or the 415 of a body that is not JSON."""
        length = exchange.headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return 413, "payload_too_large", self.too_large
        if exchange.scope["method"] in ("POST", "PUT", "PATCH") and exchange.has_body:
            media = exchange.headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if media != b"application/json" and not media.endswith(b"+json"):
                return 415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json"
        return None

    async def _admit_body(self, exchange: _Exchange, app: Starlette, target: BaseRoute) -> Receive | None:
        """Credentials and the rate limit are checked on the headers, before the body is read; the
        body is then read whole (it is bounded) and its nesting checked before anything parses it.
        The receive that replays it to the app, or None when this answered (or nobody is left to)."""
        scope = exchange.scope
        scope["route"] = target  # as the router sets it: what is refused here is counted under its route
        refusal = await refuse_before_body(scope) if authenticates(target) else None
        if refusal is not None:
            await exchange.answer(refusal)
            return None
        try:
            body = await _read_body(exchange.limited_receive)
        except TooLarge:
            return None  # answered with 413
        if body is None:
            exchange.status = 499  # the client went away before sending its body: nobody to answer
            return None
        limit = self.max_depth or _configured_depth(app)
        if json_depth_exceeds(body.decode("utf-8", "replace"), limit):
            await exchange.simple(400, "bad_request", too_deep("the body", limit))
            return None
        return _replay(body, exchange.receive)


class _Exchange:
    """One HTTP request through the middleware: its id, the headers every answer gets, what was
    answered (for the metrics and the access line) and the body read so far against the limit."""

    __slots__ = ("middleware", "scope", "receive", "_send", "headers", "request_id", "extra", "started", "status",
                 "response_started", "refused_body", "received", "has_body")

    def __init__(self, middleware: ServiceMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.middleware = middleware
        self.scope = scope
        self.receive = receive
        self._send = send
        self.headers = {k.lower(): v for k, v in scope["headers"]}
        given = self.headers.get(b"x-request-id", b"").decode("latin-1")
        self.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = self.request_id
        logs.REQUEST_ID.set(self.request_id)  # log lines of this request carry its id
        self.extra = [*SECURE_HEADERS, (b"x-request-id", self.request_id.encode())]
        if middleware.tls or scope.get("scheme") == "https":
            self.extra.append(HSTS)
        self.started = time.perf_counter()
        self.status = 500
        self.response_started = False
        self.refused_body = False
        self.received = 0
        length = self.headers.get(b"content-length")
        self.has_body = (length is not None and length != b"0") or b"transfer-encoding" in self.headers

    async def send(self, message: Message) -> None:
        """The app's (or this middleware's) message, with the secure headers, the request id and the rate limit's."""
        if self.refused_body:
            return  # the 413 has been sent; what the app says after reading a cut body is dropped
        if message["type"] == "http.response.start":
            self.response_started = True
            self.status = message["status"]
            rate = self.scope["state"].get("rate_limit_headers") or {}
            names = {k.lower() for k, _ in message.get("headers", [])}
            message["headers"] = [
                *message.get("headers", []),
                *((k, v) for k, v in self.extra if k not in names),
                *((k.lower().encode(), v.encode()) for k, v in rate.items() if k.lower().encode() not in names),
            ]
        await self._send(message)

    async def limited_receive(self) -> Message:
        """The client's next message; a body without Content-Length (chunked) that outgrows the limit is answered with 413."""
        message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.middleware.max_body_bytes:
                if not self.response_started:
                    await self.simple(413, "payload_too_large", self.middleware.too_large)
                self.refused_body = True
                raise TooLarge
        return message

    async def answer(self, response: ASGIApp) -> None:
        """Send a response of this middleware's own, with the CORS headers the app's would carry."""
        cors = self.middleware.cors
        await (CORSMiddleware(response, **cors) if cors else response)(self.scope, self.receive, self.send)

    async def simple(self, status_code: int, code: str, message: str) -> None:
        await self.answer(error_response(status_code, code, message, self.request_id))

    def record(self) -> None:
        """The request's metrics and its access line, with the request's id (uvicorn's own has none)."""
        scope = self.scope
        route = _route(scope)
        seconds = time.perf_counter() - self.started
        metrics.REQUESTS.labels(route, scope["method"], str(self.status)).inc()
        metrics.LATENCY.labels(route, scope["method"]).observe(seconds)
        access.info("%s %s %d %.1fms", scope["method"], scope.get("path", ""), self.status, seconds * 1000)  # the path without its query
        if self.status == 429:
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
