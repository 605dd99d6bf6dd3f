"""API keys in the registry: created with their grants, listed, rotated, revoked, checked per request.

A key is read from the registry on every request, never from a cache: a key revoked, expired or
rotated out is refused at once by every worker process of every replica. Each change is written
with its audit line in one transaction.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from citadel.apisettings import parse_limits
from citadel.audit import audit_insert
from citadel.auth import KEY_ID_PATTERN, KEY_NAME_PATTERN, KEY_PREFIX, AuthError, Identity, grants_of, hash_key, new_key, parse_scopes
from citadel.errors import ConfigurationError
from citadel.grants import parse_collections, parse_sources
from citadel.hashing import has_lone_surrogate
from citadel.models import ApiKeyCreated, ApiKeyRecord
from citadel.registry import Registry, api_keys, utcnow


@dataclass(frozen=True)
class Actor:
    """Who asks for a change to the keys, for the audit trail: an identity's subject or ``cli:<user>``."""

    name: str
    address: str = ""


def check_tier(tier: str, service: str) -> str:
    """A key's own rate limits (``"5/second;100/minute"``), each within the service's limit of the same period."""
    tier = tier.strip()
    if not tier:
        return ""
    try:
        periods = parse_limits(tier)
    except ValueError as exc:
        raise ConfigurationError(f"--rate-limits {tier!r}: {exc}") from None
    bounds = {seconds: (amount, name) for amount, seconds, name in parse_limits(service)}
    for amount, seconds, name in periods:
        if seconds in bounds and amount > bounds[seconds][0]:
            raise ConfigurationError(
                f"--rate-limits {tier!r}: {amount}/{name} is above the service's {bounds[seconds][0]}/{name} "
                "(CITADEL_API_RATE_LIMITS); a key's limits can only be tighter"
            )
    return tier


def _tier(text: str) -> str:
    """A key's rate limits, their form checked (their bounds: :func:`check_tier`)."""
    try:
        parse_limits(text.strip()) if text.strip() else None
    except ValueError as exc:
        raise ConfigurationError(f"--rate-limits {text!r}: {exc}") from None
    return text.strip()


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 255:
        raise ConfigurationError("give the key a name of 1 to 255 characters (--name), to tell keys apart")
    if not re.fullmatch(KEY_NAME_PATTERN, name) or has_lone_surrogate(name):
        raise ConfigurationError("a key name holds a control character (NUL, a newline, ...) or invalid Unicode: use printable text")
    return name


def _checked_id(key_id: str) -> str:
    if not re.fullmatch(KEY_ID_PATTERN, key_id):  # no such key, and no look-up of what the registry cannot store
        raise ConfigurationError(f"no API key {key_id!r}: key ids are 12 hex digits; `citadel apikey list` shows them")
    return key_id


def _split(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


class ApiKeys:
    """The API keys of one registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._touched: dict[str, float] = {}

    async def create(
        self, name: str, scopes: Iterable[str], *, collections: Iterable[str] | str = (), sources: Iterable[str] | str = (),
        rate_limits: str = "", expires_in_s: int | None = None, actor: Actor | None = None,
    ) -> ApiKeyCreated:
        """A new key (its value returned this once); no collection grant reaches no collection."""
        values = {
            "name": check_name(name), "scopes": ",".join(parse_scopes(scopes)),
            "collections": ",".join(parse_collections(collections)), "sources": ",".join(parse_sources(sources)),
            "rate_limits": _tier(rate_limits),
            "expires_at": utcnow() + dt.timedelta(seconds=expires_in_s) if expires_in_s else None,
        }
        async with self.registry.engine.begin() as conn:
            return await self._insert(conn, values, actor, "key.created")

    async def _insert(self, conn: Any, values: dict[str, Any], actor: Actor | None, action: str, detail: str = "") -> ApiKeyCreated:
        key_id, key = new_key()
        row = {"principal": key_id, **values, "key_id": key_id, "key_hash": hash_key(key), "created_at": utcnow()}
        await conn.execute(api_keys.insert().values(**row))
        await conn.execute(self._audit(actor, action, key_id, detail or f"name {row['name']!r}; scopes {row['scopes']}; "
                                       f"collections {row['collections'] or 'none'}; sources {row['sources'] or 'none'}"))
        return ApiKeyCreated(**_record(row).model_dump(), key=key)

    @staticmethod
    def _audit(actor: Actor | None, action: str, key_id: str, detail: str = "") -> sa.Insert:
        actor = actor or Actor("unknown")
        return audit_insert(actor.name, action, target=f"key:{key_id}", address=actor.address, detail=detail)

    async def list(self, include_revoked: bool = False) -> list[ApiKeyRecord]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self.registry.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(row._mapping) for row in rows]

    async def _row(self, conn: Any, key_id: str) -> Any:
        row = (await conn.execute(sa.select(api_keys).where(api_keys.c.key_id == _checked_id(key_id)))).first()
        if row is None:
            raise ConfigurationError(f"no API key {key_id!r}; `citadel apikey list` shows the key ids")
        return row

    async def revoke(self, key_id: str, actor: Actor | None = None) -> ApiKeyRecord:
        """Revoke a key at once (again: nothing changes)."""
        async with self.registry.engine.begin() as conn:
            row = await self._row(conn, key_id)
            if row.revoked_at is None:
                await conn.execute(api_keys.update().where(api_keys.c.key_id == key_id).values(revoked_at=utcnow()))
                await conn.execute(self._audit(actor, "key.revoked", key_id))
            row = await self._row(conn, key_id)
        return _record(row._mapping)

    async def rotate(self, key_id: str, grace_s: int, actor: Actor | None = None) -> tuple[ApiKeyCreated, ApiKeyRecord]:
        """A new key with the old one's name, scopes, grants, limits and lifetime; the old one stops
        working ``grace_s`` seconds from now (at once with 0), or at its own expiry if sooner."""
        now = utcnow()
        async with self.registry.engine.begin() as conn:
            old = await self._row(conn, key_id)
            if old.revoked_at is not None or (old.expires_at is not None and _aware(old.expires_at) <= now):
                raise ConfigurationError(f"API key {key_id} is revoked or expired: create a new key instead")
            if old.replaced_by is not None:
                raise ConfigurationError(f"API key {key_id} was already rotated into {old.replaced_by}; rotate that one")
            lifetime = _aware(old.expires_at) - _aware(old.created_at) if old.expires_at is not None else None
            values = {name: old._mapping[name] for name in ("name", "scopes", "collections", "sources", "rate_limits")}
            values["principal"] = old.principal or old.key_id  # the new key owns what the old one made
            values["expires_at"] = now + lifetime if lifetime is not None else None
            created = await self._insert(conn, values, actor, "key.created", detail=f"rotated from key:{key_id}")
            ends = now + dt.timedelta(seconds=grace_s)
            if old.expires_at is not None:
                ends = min(ends, _aware(old.expires_at))
            change: dict[str, Any] = {"replaced_by": created.key_id, "expires_at": ends}
            if grace_s == 0:
                change["revoked_at"] = now
            # Only while no other rotation or revocation got there first (two at once: one wins).
            still = api_keys.c.replaced_by.is_(None) & api_keys.c.revoked_at.is_(None)
            updated = await conn.execute(api_keys.update().where((api_keys.c.key_id == key_id) & still).values(**change))
            if updated.rowcount != 1:
                raise ConfigurationError(f"API key {key_id} was rotated or revoked meanwhile; `citadel apikey list` shows it")
            detail = f"replaced by key:{created.key_id}; works until {ends.isoformat()}"
            await conn.execute(self._audit(actor, "key.rotated", key_id, detail))
            old = await self._row(conn, key_id)
        return created, _record(old._mapping)

    async def authenticate(self, key: str) -> Identity:
        """The identity of ``key``, read from the registry now, or :class:`AuthError` (unknown, revoked and expired keys)."""
        if not key.startswith(KEY_PREFIX) or len(key) > 128:
            raise AuthError("unknown_key", "the API key is not valid")
        async with self.registry.engine.connect() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == hash_key(key)))).first()
        if row is None:
            raise AuthError("unknown_key", "the API key is not valid")
        if row.revoked_at is not None:
            raise AuthError("revoked_key", "the API key has been revoked")
        if row.expires_at is not None and _aware(row.expires_at) <= utcnow():
            raise AuthError("expired_key", "the API key has expired" + (" (it was rotated)" if row.replaced_by else ""))
        scopes = frozenset(_split(row.scopes))
        identity = Identity(
            subject=f"key:{row.key_id}", scopes=scopes, kind="key",
            grants=grants_of(scopes, _split(row.collections), _split(row.sources)), rate_limits=row.rate_limits,
            principal=row.principal or row.key_id,
        )
        await self._touch(row.key_id, time.monotonic())
        return identity

    async def _touch(self, key_id: str, now: float) -> None:
        """Record the last use at most once a minute per key and process: a write per request would cost more than the call."""
        if now - self._touched.get(key_id, -1e9) < 60:
            return
        self._touched[key_id] = now
        if len(self._touched) > 10_000:
            self._touched.clear()
        async with self.registry.engine.begin() as conn:
            await conn.execute(api_keys.update().where(api_keys.c.key_id == key_id).values(last_used_at=utcnow()))


def _aware(value: dt.datetime) -> dt.datetime:
    """A stored time as UTC: SQLite gives it back without its zone."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _record(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row["key_id"], name=row["name"], scopes=_split(row["scopes"]), created_at=row["created_at"],
        last_used_at=row.get("last_used_at"), revoked_at=row.get("revoked_at"), collections=_split(row["collections"]),
        sources=_split(row["sources"]), rate_limits=row["rate_limits"], expires_at=row.get("expires_at"),
        replaced_by=row.get("replaced_by"),
    )
