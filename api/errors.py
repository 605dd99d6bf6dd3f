"""One error shape for every failure: ``{success: false, error: {code, message, details?}, request_id}``.

Messages are written for the caller; a traceback, an internal path or a credential never reaches one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from citadel.auth import AuthError
from citadel.errors import CitadelError, CollectionMismatchError, CollectionNotFound, ConfigurationError, EmbedderError
from citadel.outages import cause, lost_dependency
from citadel.workflows import WorkflowInvalid

log = logging.getLogger("citadel.api")

CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request",
    429: "rate_limited", 500: "internal_error", 502: "backend_error", 503: "unavailable",
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any | None = None


class ErrorBody(BaseModel):
    """What every error response carries."""

    success: bool = False
    error: ErrorDetail
    request_id: str | None = None


class ApiError(Exception):
    """An error with its HTTP status, raised by routes and security checks."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.message = message
        self.details = details
        self.headers = headers or {}


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(
    status: int, code: str, message: str, request_id: str | None, details: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"success": False, "error": {"code": code, "message": message}, "request_id": request_id}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


# Documented on every authenticated route of the OpenAPI document.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Invalid input (an unknown model, a bad collection name, an invalid workflow)",
        401: "No credentials, or credentials refused",
        403: "The credentials lack the route's scope, or the request names what it may not",
        413: "The body is larger than CITADEL_API_MAX_BODY_BYTES",
        415: "The body is not JSON",
        422: "The body does not match the schema",
        429: "Rate limited; see Retry-After and RateLimit",
        503: "A dependency (the registry, Redis, the vector store) is unavailable; see Retry-After",
    }.items()
}


RETRY_AFTER_S = 5


def unavailable_response(exc: BaseException, request_id: str | None) -> JSONResponse | None:
    """503 naming the dependency when ``exc`` is a lost connection to one, else None."""
    dependency = lost_dependency(exc)
    if dependency is None:
        return None
    log.warning("%s is unavailable: %s", dependency, cause(exc)[:300])  # the driver's message: no statement, no parameter
    return error_response(
        503, "unavailable", f"{dependency} is unavailable; try again later", request_id, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Where and what, without echoing the input (it may be large or a secret)."""
    return [
        {"location": ".".join(str(part) for part in error.get("loc", ())), "message": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]


def _methods_of(app: FastAPI, request: Request) -> list[str]:
    from starlette.routing import Match, Route

    methods: set[str] = set()
    for route in app.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return sorted(methods)


def install_handlers(app: FastAPI) -> None:
    """Map every known failure onto the one error shape."""
    _install_http_handlers(app)
    _install_core_handlers(app)


def _install_http_handlers(app: FastAPI) -> None:
    """The service's own refusals, the framework's and the credentials'."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, request_id_of(request), exc.details, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else CODES.get(exc.status_code, "error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not only those of the first route matched
            headers["Allow"] = ", ".join(_methods_of(app, request))
        return error_response(exc.status_code, CODES.get(exc.status_code, "error"), message, request_id_of(request), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(
            422, "invalid_request", "the request does not match the schema", request_id_of(request), _validation_details(exc)
        )

    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> JSONResponse:
        return error_response(401, "unauthorized", str(exc), request_id_of(request), headers={"WWW-Authenticate": "Bearer"})


def _install_core_handlers(app: FastAPI) -> None:
    """What the core raises: invalid input, a missing or mismatched collection, a backend down."""

    @app.exception_handler(WorkflowInvalid)
    async def _workflow(request: Request, exc: WorkflowInvalid) -> JSONResponse:
        problems = [{"location": p.location, "message": p.message} for p in exc.problems]
        return error_response(400, "invalid_workflow", str(exc).splitlines()[0], request_id_of(request), problems)

    @app.exception_handler(CollectionNotFound)
    async def _no_collection(request: Request, exc: CollectionNotFound) -> JSONResponse:
        return error_response(404, "collection_not_found", str(exc), request_id_of(request))

    @app.exception_handler(CollectionMismatchError)
    async def _mismatch(request: Request, exc: CollectionMismatchError) -> JSONResponse:
        return error_response(409, "collection_mismatch", str(exc), request_id_of(request))

    @app.exception_handler(ConfigurationError)
    async def _configuration(request: Request, exc: ConfigurationError) -> JSONResponse:
        return error_response(400, "bad_request", str(exc), request_id_of(request))

    @app.exception_handler(EmbedderError)
    async def _embedder(request: Request, exc: EmbedderError) -> JSONResponse:
        log.warning("embedding backend failed: %s", exc)
        return error_response(502, "backend_error", "the embedding backend failed; try again later", request_id_of(request))

    async def _connection_lost(request: Request, exc: Exception) -> JSONResponse:
        response = unavailable_response(exc, request_id_of(request))
        if response is None:
            raise exc  # not a lost dependency: the service's own 500, logged with its traceback
        return response

    for kind in (OSError, sqlalchemy.exc.SQLAlchemyError):
        app.add_exception_handler(kind, _connection_lost)

    @app.exception_handler(CitadelError)
    async def _citadel(request: Request, exc: CitadelError) -> JSONResponse:
        response = unavailable_response(exc, request_id_of(request))
        if response is not None:
            return response
        log.warning("request failed: %s", exc)
        return error_response(500, "internal_error", "the request failed; the service log has the cause", request_id_of(request))
