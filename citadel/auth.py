"""Who a request is: bearer tokens (PyJWT) and API keys (random, stored only as hashes).

Shared by the HTTP service, which checks credentials, and the CLI, which creates keys and mints
tokens for operators. Nothing here logs or repeats a credential.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt

from citadel.apisettings import ApiSettings
from citadel.errors import CitadelError, ConfigurationError
from citadel.grants import Grants, parse_collections, parse_sources

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
    """An authenticated caller: a key id or a token subject, what it may do, and what it may reach."""

    subject: str
    scopes: frozenset[str]
    kind: str  # "key" | "jwt"
    grants: Grants = field(default_factory=Grants)
    rate_limits: str = ""  # the key's own tier, checked beside the service's limits
    principal: str = ""  # who owns what the caller makes: a key's first id, kept by its rotations

    @property
    def owner(self) -> str:
        """Whose runs and inline records the caller's are: ``key:<first id>`` across rotations, or the token's subject."""
        return f"key:{self.principal}" if self.kind == "key" and self.principal else self.subject

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def reaches(self, collection: str) -> bool:
        """Whether the caller may search, index or watch ``collection`` (admin reaches all)."""
        return "admin" in self.scopes or self.grants.reaches(collection)

    @property
    def reaches_every_collection(self) -> bool:
        return "admin" in self.scopes or self.grants.every_collection


def grants_of(scopes: Iterable[str], collections: Iterable[str], sources: Iterable[str]) -> Grants:
    """What a caller with these scopes and grants reaches: everything for admin."""
    return Grants(tuple(collections), tuple(sources), everything="admin" in set(scopes))


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
        scopes = frozenset(_words(raw)) & frozenset(SCOPES)
        try:  # a grant the token's issuer wrote wrongly reaches nothing, as a missing one
            collections, sources = parse_collections(_words(claims.get("collections"))), parse_sources(_words(claims.get("sources")))
        except ConfigurationError as exc:
            raise AuthError("claims", f"the token's grants are malformed: {exc}") from None
        return Identity(subject=f"jwt:{claims['sub']}", scopes=scopes, kind="jwt", grants=grants_of(scopes, collections, sources))


def _words(raw: Any) -> list[str]:
    """A claim given as a space-separated string or a list of strings."""
    if isinstance(raw, str):
        return raw.split()
    return [str(item) for item in raw] if isinstance(raw, list) else []


def mint_token(
    settings: ApiSettings, subject: str, scopes: Iterable[str], ttl_s: float,
    collections: Iterable[str] = (), sources: Iterable[str] = (),
) -> str:
    """An HS256 token for ``subject`` with ``scopes`` (a space-separated ``scope`` claim, as OAuth)
    and its grants (``collections`` and ``sources`` claims, lists)."""
    if settings.jwt_secret is None:
        raise ConfigurationError("minting a token needs CITADEL_JWT_SECRET (tokens of a public key are minted by their issuer)")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject, "scope": " ".join(parse_scopes(scopes)), "iat": now, "nbf": now, "exp": now + int(ttl_s),
        "collections": list(parse_collections(list(collections))), "sources": list(parse_sources(list(sources))),
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def parse_ttl(text: str, option: str = "--ttl") -> int:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    if not number.isdigit() or int(number) < 1:
        raise ConfigurationError(f"{option} {text!r}: give a duration such as 900s, 15m, 1h or 90d")
    return int(number) * units[unit]


def expires_at(ttl_s: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl_s)
