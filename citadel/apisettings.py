"""Settings of the HTTP service (``citadel api``): authentication, limits and what requests may name.

Every default is the safe one: authentication on, no cross-origin access, admin routes from the
loopback only, no folder indexable over HTTP until an operator names one.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from citadel.settings import split_comma_list

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CommaList = Annotated[list[str], NoDecode]

JWT_ALGORITHMS = frozenset({"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "ES256", "ES384"})
LIMIT_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def networks(values: list[str], variable: str) -> list[Network]:
    """CIDRs (or single addresses) as networks; a bad one is an error naming the variable."""
    found: list[Network] = []
    for value in values:
        try:
            found.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"{variable}: {value!r} is not an address or a CIDR such as 10.0.0.0/8") from None
    return found


def parse_limits(text: str) -> list[tuple[int, int, str]]:
    """``"20/second;600/minute"`` -> ``[(20, 1, "second"), (600, 60, "minute")]``."""
    parsed: list[tuple[int, int, str]] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        amount, _, period = part.partition("/")
        period = period.strip().lower().rstrip("s")
        if not amount.strip().isdigit() or int(amount) < 1 or period not in LIMIT_PERIODS:
            raise ValueError(
                f"CITADEL_API_RATE_LIMITS: {part!r} is not a limit; write e.g. 20/second;600/minute;20000/hour"
            )
        parsed.append((int(amount), LIMIT_PERIODS[period], period))
    return parsed


class ApiSettings(BaseSettings):
    """Every knob of the HTTP service; each field maps to ``CITADEL_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CITADEL_", env_file=".env", extra="ignore", hide_input_in_errors=True)

    jwt_secret: SecretStr | None = Field(None, description="HS256 secret for bearer tokens (32 bytes or more).")
    jwt_public_key: str | None = Field(None, description="RS256/ES256 public key: PEM text or a file holding it.")
    jwt_algorithms: CommaList = Field(default_factory=list, description="Accepted algorithms; default from the key.")
    jwt_issuer: str | None = Field(None, description="Required `iss` of tokens, when set.")
    jwt_audience: str | None = Field(None, description="Required `aud` of tokens, when set.")
    jwt_leeway_s: int = Field(30, ge=0, le=300, description="Clock skew allowed on exp and nbf.")

    api_rate_limits: str = Field("20/second;600/minute;20000/hour", description="Per identity, else per address.")
    api_rate_limit_exempt: CommaList = Field(default_factory=list, description="CIDRs never rate limited.")
    rate_limit_on_redis_down: Literal["open", "closed", "local"] = Field(
        "local", description="While Redis is down: limit per process (local), refuse (closed) or serve unlimited (open)."
    )
    api_trusted_proxies: CommaList = Field(default_factory=list, description="Peers whose X-Forwarded-For is believed.")
    api_admin_allow: CommaList = Field(
        default_factory=lambda: ["127.0.0.1/32", "::1/128"], description="CIDRs that may call admin routes."
    )
    api_admin_deny: CommaList = Field(default_factory=list, description="CIDRs refused admin routes even when allowed.")
    api_cors_origins: CommaList = Field(default_factory=list, description="Origins allowed cross-origin; none by default.")

    api_max_body_bytes: int = Field(1024 * 1024, gt=0, description="Larger request bodies get 413.")
    api_header_timeout_s: float = Field(
        10.0, gt=0, le=600, description="A connection whose request line and headers are not all in within this is closed."
    )
    api_body_timeout_s: float = Field(30.0, gt=0, le=3600, description="A request whose body is not all in within this is closed.")
    api_max_text_chars: int = Field(32_000, gt=0, description="Longest text one embedding request may carry.")
    api_max_batch_texts: int = Field(256, gt=0, description="Most texts in one batch request.")
    api_max_workflow_steps: int = Field(50, gt=0, description="Most steps in one workflow submitted over HTTP.")
    api_source_roots: CommaList = Field(default_factory=list, description="Folders an index step may read over HTTP.")
    api_source_buckets: CommaList = Field(
        default_factory=list, description="s3://bucket/prefix entries an index step may read over HTTP (default: none)."
    )
    api_deployments: CommaList = Field(default_factory=list, description="Deployments a flow step may start over HTTP.")
    api_workflow_deployment: str = Field("run-workflow/default", description="Where submitted workflows run.")
    api_models: CommaList = Field(default_factory=list, description="Models served besides CITADEL_EMBEDDING_MODEL.")

    api_hot_cache_items: int = Field(10_000, ge=0, description="Vectors each API process keeps in front of Redis.")
    api_batch_max_texts: int = Field(64, gt=0, description="Most texts one micro-batch sends to the embedder.")
    api_batch_wait_ms: float = Field(2.0, ge=0, le=50, description="Longest a micro-batch waits for company.")
    api_health_cache_s: float = Field(3.0, ge=0, description="How long a dependency check is reused.")
    api_health_timeout_s: float = Field(2.0, gt=0, description="Each dependency check's own timeout.")

    @field_validator(
        "jwt_algorithms", "api_rate_limit_exempt", "api_trusted_proxies", "api_admin_allow", "api_admin_deny",
        "api_cors_origins", "api_source_roots", "api_source_buckets", "api_deployments", "api_models", mode="before",
    )
    @classmethod
    def _split(cls, value: object) -> object:
        return split_comma_list(value)

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        unknown = [alg for alg in value if alg not in JWT_ALGORITHMS]
        if unknown:
            raise ValueError(f"CITADEL_JWT_ALGORITHMS: {', '.join(unknown)} not accepted; use {', '.join(sorted(JWT_ALGORITHMS))}")
        return value

    @field_validator("api_cors_origins")
    @classmethod
    def _no_wildcard(cls, value: list[str]) -> list[str]:
        if "*" in value:
            raise ValueError("CITADEL_API_CORS_ORIGINS: '*' is refused (credentials are sent); list the origins")
        return value

    @model_validator(mode="after")
    def _parse_networks(self) -> ApiSettings:
        for name in ("api_rate_limit_exempt", "api_trusted_proxies", "api_admin_allow", "api_admin_deny"):
            networks(getattr(self, name), f"CITADEL_{name.upper()}")
        parse_limits(self.api_rate_limits)
        for entry in self.api_source_buckets:  # the bucket's name is checked with the sandbox it makes (SourceRoots)
            if not entry.strip().lower().startswith("s3://"):
                raise ValueError(f"CITADEL_API_SOURCE_BUCKETS: {entry!r} is not an s3:// URI; give s3://bucket or s3://bucket/prefix")
        if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value()) < 32:
            raise ValueError("CITADEL_JWT_SECRET must be at least 32 characters; `openssl rand -hex 32` makes one")
        return self

    def network_list(self, name: str) -> list[Network]:
        return networks(getattr(self, name), f"CITADEL_{name.upper()}")

    @property
    def source_roots(self) -> list[Path]:
        return [Path(root).resolve() for root in self.api_source_roots]

    @property
    def sandbox(self) -> list[str]:
        """What a run started over HTTP may read: the source roots' folders and the allowed s3:// prefixes."""
        return [str(root) for root in self.source_roots] + list(self.api_source_buckets)

    @property
    def public_key_pem(self) -> str | None:
        """The configured public key's PEM text (read from the file when a path is given)."""
        value = self.jwt_public_key
        if not value:
            return None
        if "-----BEGIN" in value:
            return value
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"CITADEL_JWT_PUBLIC_KEY: {path} is neither PEM text nor a readable file")
        return path.read_text()
