"""Key management over HTTP: the admin scope, and only from the admin networks."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request

from api.errors import ERROR_RESPONSES, ApiError
from api.schemas import KeyCreatedResponse, KeyCreateRequest, KeyList
from api.security import require
from api.state import state_of
from citadel.auth import KEY_ID_PATTERN
from citadel.errors import ConfigurationError
from citadel.models import ApiKeyRecord

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require("admin"))], responses={
    **ERROR_RESPONSES, 404: {"description": "No such key"}})


@router.get("/keys", response_model=KeyList, summary="API keys (never their values)")
async def list_keys(request: Request) -> KeyList:
    return KeyList(keys=await state_of(request).keys.list(include_revoked=True))


@router.post("/keys", response_model=KeyCreatedResponse, status_code=201, summary="Create a key; its value is shown once")
async def create_key(body: KeyCreateRequest, request: Request) -> KeyCreatedResponse:
    state = state_of(request)
    created = await state.keys.create(body.name, body.scopes)
    state.has_credentials_configured = True
    return KeyCreatedResponse(key=created)


@router.delete("/keys/{key_id}", response_model=ApiKeyRecord, summary="Revoke a key at once")
async def revoke_key(
    request: Request,
    # Documented; an id of another shape is no key's (404), which the core answers without a look-up.
    key_id: str = Path(max_length=64, json_schema_extra={"pattern": KEY_ID_PATTERN}),
) -> ApiKeyRecord:
    try:
        return await state_of(request).keys.revoke(key_id)
    except ConfigurationError as exc:
        raise ApiError(404, str(exc)) from exc
