"""Who a request is: bearer tokens (PyJWT) and API keys (random, stored only as hashes).

Shared by the HTTP service, which checks credentials, and the CLI, which creates keys and mints
tokens for operators. Nothing here logs or repeats a credential.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
import sqlalchemy as sa

from citadel.apisettings import ApiSettings
from citadel.errors import CitadelError, ConfigurationError
from citadel.hashing import has_lone_surrogate
from citadel.models import ApiKeyCreated, ApiKeyRecord
from citadel.registry import Registry, api_keys, utcnow

SCOPES = ("embeddings", "search", "workflows", "metrics", "admin")
KEY_PREFIX = "ctd_"
# A key name: some visible character, no control characters (NUL, which Postgres cannot store, is one).
KEY_NAME_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
# A key id: what :func:`new_key` makes.
KEY_ID_PATTERN = r"^[0-9a-f]{12}$"


class AuthError(CitadelError):
    """Credentials missing or refused; ``reason`` is a short code for metrics and logs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: a key id or a token subject, and what it may do."""

    subject: str
    scopes: frozenset[str]
    kind: str  # "key" | "jwt"

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def parse_scopes(value: str | Iterable[str]) -> list[str]:
    """Scopes from ``"a,b"`` or a list, checked against :data:`SCOPES`."""
    items = value.split(",") if isinstance(value, str) else list(value)
    scopes = sorted({item.strip() for item in items if item.strip()})
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown or not scopes:
        shown = f"unknown scope {', '.join(map(repr, unknown))}" if unknown else "no scope given"
        raise ConfigurationError(f"{shown}; scopes are {', '.join(SCOPES)} (admin allows everything)")
    return scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh ``(key_id, key)``: the id is the key's public part, the rest 256 random bits."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


class TokenVerifier:
    """Checks bearer tokens against the configured secret or public key, with an algorithm
    allowlist (``none`` is never in it), a required ``exp``, and ``iss``/``aud`` when configured."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.key: Any = None
        self.algorithms: list[str] = []
        public = settings.public_key_pem
        if public:
            from cryptography.hazmat.primitives.asymmetric import ec, rsa
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            try:
                self.key = load_pem_public_key(public.encode())
            except ValueError:
                raise ConfigurationError("CITADEL_JWT_PUBLIC_KEY is not a PEM public key") from None
            if isinstance(self.key, rsa.RSAPublicKey):
                self.algorithms = ["RS256", "RS384", "RS512", "PS256", "PS384"]
            elif isinstance(self.key, ec.EllipticCurvePublicKey):
                self.algorithms = ["ES256", "ES384"]
            else:
                raise ConfigurationError("CITADEL_JWT_PUBLIC_KEY must be an RSA or EC key")
        elif settings.jwt_secret is not None:
            self.key = settings.jwt_secret.get_secret_value()
            self.algorithms = ["HS256", "HS384", "HS512"]
        if settings.jwt_algorithms:
            self.algorithms = [alg for alg in self.algorithms if alg in settings.jwt_algorithms]

    @property
    def enabled(self) -> bool:
        return bool(self.key is not None and self.algorithms)

    def verify(self, token: str) -> Identity:
        if not self.enabled:
            raise AuthError("jwt_disabled", "bearer tokens are not accepted here (no CITADEL_JWT_SECRET or CITADEL_JWT_PUBLIC_KEY)")
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                leeway=self.settings.jwt_leeway_s,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("expired", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("not_yet_valid", "the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise AuthError("audience", "the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("issuer", "the token comes from another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("claims", f"the token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("algorithm", f"the token's algorithm is not accepted; accepted: {', '.join(self.algorithms)}") from None
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "the token is malformed or its signature does not match") from None
        raw = claims.get("scope", claims.get("scopes", ""))
        scopes = raw.split() if isinstance(raw, str) else [str(s) for s in raw] if isinstance(raw, list) else []
        return Identity(subject=f"jwt:{claims['sub']}", scopes=frozenset(s for s in scopes if s in SCOPES), kind="jwt")


def mint_token(settings: ApiSettings, subject: str, scopes: Iterable[str], ttl_s: float) -> str:
    """An HS256 token for ``subject`` with ``scopes`` (a space-separated ``scope`` claim, as OAuth)."""
    if settings.jwt_secret is None:
        raise ConfigurationError("minting a token needs CITADEL_JWT_SECRET (tokens of a public key are minted by their issuer)")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "scope": " ".join(parse_scopes(scopes)), "iat": now, "nbf": now, "exp": now + int(ttl_s)}
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def parse_ttl(text: str) -> int:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    if not number.isdigit() or int(number) < 1:
        raise ConfigurationError(f"--ttl {text!r}: give a duration such as 900s, 15m, 1h or 7d")
    return int(number) * units[unit]


class ApiKeys:
    """API keys in the registry database: created, listed, revoked, and checked per request (a
    checked key is trusted for ``cache_s`` seconds so a busy service does not read it per call)."""

    def __init__(self, registry: Registry, cache_s: float = 5.0) -> None:
        self.registry = registry
        self.cache_s = cache_s
        self._checked: dict[str, tuple[float, Identity]] = {}
        self._touched: dict[str, float] = {}

    async def create(self, name: str, scopes: Iterable[str]) -> ApiKeyCreated:
        name = name.strip()
        if not name or len(name) > 255:
            raise ConfigurationError("give the key a name of 1 to 255 characters (--name), to tell keys apart")
        if not re.fullmatch(KEY_NAME_PATTERN, name) or has_lone_surrogate(name):
            raise ConfigurationError("a key name holds a control character (NUL, a newline, ...) or invalid Unicode: use printable text")
        checked = parse_scopes(scopes)
        key_id, key = new_key()
        now = utcnow()
        async with self.registry.engine.begin() as conn:
            await conn.execute(
                api_keys.insert().values(key_id=key_id, key_hash=hash_key(key), name=name, scopes=",".join(checked), created_at=now)
            )
        return ApiKeyCreated(key_id=key_id, name=name, scopes=checked, created_at=now, key=key)

    async def list(self, include_revoked: bool = False) -> list[ApiKeyRecord]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self.registry.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(row._mapping) for row in rows]

    async def revoke(self, key_id: str) -> ApiKeyRecord:
        if not re.fullmatch(KEY_ID_PATTERN, key_id):  # no such key, and no look-up of what the registry cannot store
            raise ConfigurationError(f"no API key {key_id!r}: key ids are 12 hex digits; `citadel apikey list` shows them")
        async with self.registry.engine.begin() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id))).first()
            if row is None:
                raise ConfigurationError(f"no API key {key_id!r}; `citadel apikey list` shows the key ids")
            if row.revoked_at is None:
                await conn.execute(api_keys.update().where(api_keys.c.key_id == key_id).values(revoked_at=utcnow()))
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id))).one()
        self._checked = {h: v for h, v in self._checked.items() if v[1].subject != f"key:{key_id}"}
        return _record(row._mapping)

    async def authenticate(self, key: str) -> Identity:
        """The identity of ``key``, or :class:`AuthError` (unknown and revoked keys alike)."""
        if not key.startswith(KEY_PREFIX) or len(key) > 128:
            raise AuthError("unknown_key", "the API key is not valid")
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._checked.get(digest)
        if cached and now - cached[0] < self.cache_s:
            return cached[1]
        async with self.registry.engine.connect() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == digest))).first()
        if row is None:
            raise AuthError("unknown_key", "the API key is not valid")
        if row.revoked_at is not None:
            self._checked.pop(digest, None)
            raise AuthError("revoked_key", "the API key has been revoked")
        identity = Identity(subject=f"key:{row.key_id}", scopes=frozenset(row.scopes.split(",")), kind="key")
        self._checked[digest] = (now, identity)
        if len(self._checked) > 10_000:
            self._checked.clear()
        await self._touch(row.key_id, now)
        return identity

    async def _touch(self, key_id: str, now: float) -> None:
        """Record the last use at most once a minute per key: a write per request would cost more than the call."""
        if now - self._touched.get(key_id, -1e9) < 60:
            return
        self._touched[key_id] = now
        async with self.registry.engine.begin() as conn:
            await conn.execute(api_keys.update().where(api_keys.c.key_id == key_id).values(last_used_at=utcnow()))


def _record(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row["key_id"], name=row["name"], scopes=row["scopes"].split(","), created_at=row["created_at"],
        last_used_at=row["last_used_at"], revoked_at=row["revoked_at"],
    )


def expires_at(ttl_s: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl_s)
