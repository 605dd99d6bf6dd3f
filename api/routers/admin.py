"""Key management and the audit trail over HTTP: the admin scope, and only from the admin networks.

Every call of an admin route goes into the audit trail as ``admin.<operation id>``, answered or
refused; the key changes write their own lines (key.created, key.rotated, key.revoked) beside it."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auditing import audit
from api.errors import CODES, ERROR_RESPONSES, ApiError
from api.schemas import (
    GRACE_PATTERN,
    GRANT_PATTERN,
    LIMITS_PATTERN,
    SOURCE_PATTERN,
    TTL_PATTERN,
    AuditList,
    KeyCreatedResponse,
    KeyCreateRequest,
    KeyList,
    KeyRotatedResponse,
    KeyRotateRequest,
)
from api.security import admin_action, require, target_of
from api.state import State
from citadel.apikeys import Actor, check_tier
from citadel.auth import KEY_ID_PATTERN, Identity, parse_ttl
from citadel.errors import ConfigurationError
from citadel.models import ApiKeyRecord


async def audited(request: Request, state: State, identity: Annotated[Identity, Depends(require("admin"))]) -> AsyncIterator[Identity]:
    """The admin caller; the call's line in the audit trail once the route has answered (a refusal
    of the caller itself is written by :func:`require`)."""
    try:
        yield identity
    except Exception as exc:
        status, detail = _answer(exc)
        outcome = "refused" if status < 500 else "failed"
        audit(request, state, admin_action(request), target=target_of(request), outcome=outcome, detail=f"{status}: {detail}")
        raise
    audit(request, state, admin_action(request), target=target_of(request))


def _answer(exc: Exception) -> tuple[int, str]:
    """The status a failure is answered with, and what the trail says of it (never the input)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, ConfigurationError):
        return 400, str(exc)
    if isinstance(exc, RequestValidationError):
        return 422, "the request does not match the schema"
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, CODES.get(exc.status_code, "error")
    return 500, type(exc).__name__


Admin = Annotated[Identity, Depends(audited)]

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(audited)], responses={
    **ERROR_RESPONSES, 404: {"description": "No such key"}})

KEY_ID = Path(max_length=64, json_schema_extra={"pattern": KEY_ID_PATTERN})
"""A key id, documented; one of another shape is no key's (404), answered without a look-up."""


def _actor(request: Request, identity: Identity) -> Actor:
    return Actor(identity.subject, getattr(request.state, "client_address", ""))


@router.get("/keys", response_model=KeyList, summary="API keys (never their values)", operation_id="list_keys")
async def list_keys(state: State) -> KeyList:
    return KeyList(keys=await state.keys.list(include_revoked=True))


# What a client (and a stateful test) can do next with a key it created.
CREATED_LINKS = {
    "RevokeKey": {"operationId": "revoke_key", "parameters": {"key_id": "$response.body#/key/key_id"},
                  "description": "Revoke the key just created."},
    "RotateKey": {"operationId": "rotate_key", "parameters": {"key_id": "$response.body#/key/key_id"},
                  "description": "Rotate the key just created."},
    "ListKeys": {"operationId": "list_keys", "description": "The key is listed (without its value)."},
}


def _checked(value: str, pattern: str, field: str, rules: str) -> str:
    if not re.search(pattern, value):
        raise ApiError(400, f"{field} {value!r}: {rules}")
    return value


def _grants(body: KeyCreateRequest) -> tuple[list[str], list[str]]:
    collections = [_checked(item, GRANT_PATTERN, "collections", "give collection names or patterns of letters, digits, "
                            "'_', '.', '-', '*' and '?' (e.g. 'team-a-*')") for item in body.collections or []]
    sources = [_checked(item, SOURCE_PATTERN, "sources", "give absolute folders or s3://bucket/prefix entries, "
                        "without commas or control characters") for item in body.sources or []]
    return collections, sources


@router.post(
    "/keys", response_model=KeyCreatedResponse, status_code=201, summary="Create a key; its value is shown once",
    operation_id="create_key", responses={201: {"description": "The key, its value included", "links": CREATED_LINKS}},
)
async def create_key(body: KeyCreateRequest, state: State, identity: Admin, request: Request) -> KeyCreatedResponse:
    """A key with its scopes, the collections and sources it reaches (none given: none), its own
    rate limits within the service's, and an expiry."""
    collections, sources = _grants(body)
    tier, expires_in_s = "", None
    try:
        if body.rate_limits is not None:
            _checked(body.rate_limits, LIMITS_PATTERN, "rate_limits", "give limits such as 5/second;100/minute")
            tier = check_tier(body.rate_limits, state.api.api_rate_limits)
        if body.expires_in is not None:
            _checked(body.expires_in, TTL_PATTERN, "expires_in", "give a duration such as 3600, 15m, 1h or 90d")
            expires_in_s = parse_ttl(body.expires_in, "expires_in")
    except ConfigurationError as exc:
        raise ApiError(400, str(exc).replace("--rate-limits", "rate_limits")) from exc
    created = await state.keys.create(
        body.name, body.scopes, collections=collections, sources=sources, rate_limits=tier, expires_in_s=expires_in_s,
        actor=_actor(request, identity),
    )
    state.has_credentials_configured = True
    return KeyCreatedResponse(key=created)


@router.delete(
    "/keys/{key_id}", response_model=ApiKeyRecord, summary="Revoke a key at once", operation_id="revoke_key",
    responses={200: {"description": "The key, revoked", "links": {"ListKeys": CREATED_LINKS["ListKeys"]}}},
)
async def revoke_key(state: State, identity: Admin, request: Request, key_id: str = KEY_ID) -> ApiKeyRecord:
    try:
        return await state.keys.revoke(key_id, actor=_actor(request, identity))
    except ConfigurationError as exc:
        raise ApiError(404, str(exc)) from exc


ROTATED_LINKS = {
    "RevokeNewKey": {"operationId": "revoke_key", "parameters": {"key_id": "$response.body#/key/key_id"},
                     "description": "Revoke the key the rotation issued."},
}


@router.post(
    "/keys/{key_id}/rotate", response_model=KeyRotatedResponse, status_code=201, operation_id="rotate_key",
    summary="A new key in place of this one, which keeps working for the grace period",
    responses={201: {"description": "The new key, its value included, and the old one", "links": ROTATED_LINKS},
               409: {"description": "The key is revoked, expired or already rotated"}},
)
async def rotate_key(
    state: State, identity: Admin, request: Request, key_id: str = KEY_ID,
    body: KeyRotateRequest = Body(openapi_examples={"an hour": {"value": {"grace": "1h"}}, "at once": {"value": {"grace": "0"}}}),
) -> KeyRotatedResponse:
    """The new key has the old one's name, scopes, grants, rate limits and lifetime."""
    grace = _checked(body.grace, GRACE_PATTERN, "grace", "give a duration such as 0 (at once), 300, 15m or 1h").strip()
    grace_s = 0 if grace.rstrip("smhd").strip("0") == "" else parse_ttl(grace, "grace")
    if not any(key.key_id == key_id for key in await state.keys.list(include_revoked=True)):
        raise ApiError(404, f"no API key {key_id!r}; GET /api/v1/admin/keys lists the key ids")
    try:
        created, old = await state.keys.rotate(key_id, grace_s, actor=_actor(request, identity))
    except ConfigurationError as exc:  # revoked, expired or rotated already
        raise ApiError(409, str(exc)) from exc
    return KeyRotatedResponse(key=created, replaced=old)


# RFC 3339, as the document's date-time format says: a number or a date alone is not a time.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


@router.get("/audit", response_model=AuditList, summary="The audit trail", operation_id="read_audit")
async def read_audit(
    state: State,
    since: str | None = Query(None, max_length=64, json_schema_extra={"format": "date-time"},
                              description="An RFC 3339 time, with its zone (2026-01-31T12:00:00Z); the lines from then on."),
    limit: int = Query(1000, ge=1, le=10_000, description="At most this many lines: the newest."),
    actor: str | None = Query(None, max_length=255, pattern=r"^[^\x00-\x1f\x7f]*$",
                              description="Only this actor's lines: key:<id>, jwt:<subject>, cli:<user> or anonymous."),
) -> AuditList:
    """Who created, rotated or revoked keys, called admin routes, and was refused what, oldest first."""
    return AuditList(entries=await state.audit.read(_since(since), limit, actor))


def _since(text: str | None) -> dt.datetime | None:
    """``text`` as a time in UTC; the earliest or latest time for one beyond them."""
    if text is None:
        return None
    try:
        if not RFC3339.fullmatch(text):
            raise ValueError(text)
        moment = dt.datetime.fromisoformat(text.upper())
    except ValueError:
        raise ApiError(400, f"since {text!r} is not an RFC 3339 time such as 2026-01-31T12:00:00Z", code="bad_since") from None
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        return dt.datetime.min.replace(tzinfo=dt.UTC) if moment.year < 2 else dt.datetime.max.replace(tzinfo=dt.UTC)
