"""Key management over HTTP: the admin scope, and only from the admin networks."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path

from api.errors import ERROR_RESPONSES, ApiError
from api.schemas import KeyCreatedResponse, KeyCreateRequest, KeyList
from api.security import require
from api.state import State
from citadel.auth import KEY_ID_PATTERN
from citadel.errors import ConfigurationError
from citadel.models import ApiKeyRecord

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require("admin"))], responses={
    **ERROR_RESPONSES, 404: {"description": "No such key"}})


@router.get("/keys", response_model=KeyList, summary="API keys (never their values)", operation_id="list_keys")
async def list_keys(state: State) -> KeyList:
    return KeyList(keys=await state.keys.list(include_revoked=True))


# What a client (and a stateful test) can do next with a key it created.
CREATED_LINKS = {
    "RevokeKey": {"operationId": "revoke_key", "parameters": {"key_id": "$response.body#/key/key_id"},
                  "description": "Revoke the key just created."},
    "ListKeys": {"operationId": "list_keys", "description": "The key is listed (without its value)."},
}


@router.post(
    "/keys", response_model=KeyCreatedResponse, status_code=201, summary="Create a key; its value is shown once",
    operation_id="create_key", responses={201: {"description": "The key, its value included", "links": CREATED_LINKS}},
)
async def create_key(body: KeyCreateRequest, state: State) -> KeyCreatedResponse:
    created = await state.keys.create(body.name, body.scopes)
    state.has_credentials_configured = True
    return KeyCreatedResponse(key=created)


@router.delete(
    "/keys/{key_id}", response_model=ApiKeyRecord, summary="Revoke a key at once", operation_id="revoke_key",
    responses={200: {"description": "The key, revoked", "links": {"ListKeys": CREATED_LINKS["ListKeys"]}}},
)
async def revoke_key(
    state: State,
    # Documented; an id of another shape is no key's (404), which the core answers without a look-up.
    key_id: str = Path(max_length=64, json_schema_extra={"pattern": KEY_ID_PATTERN}),
) -> ApiKeyRecord:
    try:
        return await state.keys.revoke(key_id)
    except ConfigurationError as exc:
        raise ApiError(404, str(exc)) from exc
