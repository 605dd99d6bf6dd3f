"""``citadel api``, ``citadel apikey`` and ``citadel token``: serve the HTTP API and manage who may call it.

A key or token reaches only the collections (names or patterns) and sources (folders, s3://
prefixes) it is given; none reaches nothing, the admin scope everything. Every change to a key
is written to the audit trail (``citadel audit``) as ``cli:<user>``'s.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import typer

from citadel.errors import ConfigurationError
from citadel.models import ApiKeyCreated, ApiKeyRecord, TokenCreated
from cli.common import JsonOption, err, fail, out, print_json, run, settings
from cli.prefectenv import quiet_prefect

if TYPE_CHECKING:
    from citadel.apikeys import Actor, ApiKeys
    from citadel.apisettings import ApiSettings
    from citadel.registry import Registry

T = TypeVar("T")
apikey_app = typer.Typer(no_args_is_help=True, help="Create, list, rotate and revoke API keys of the HTTP service.")
token_app = typer.Typer(no_args_is_help=True, help="Mint bearer tokens (where CITADEL_JWT_SECRET is configured).")


def api_settings() -> ApiSettings:
    """The HTTP service's settings, or a one-line configuration error."""
    from pydantic import ValidationError

    from citadel.apisettings import ApiSettings

    try:
        return ApiSettings()
    except ValidationError as exc:
        fail("bad configuration: " + "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()))


def serve_api(
    host: str = typer.Option("127.0.0.1", "--host", envvar="CITADEL_API_HOST", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8000, "--port", envvar="CITADEL_API_PORT", help="Port to listen on."),
    workers: int = typer.Option(
        1, "--workers", envvar="CITADEL_API_WORKERS", min=1, max=64, help="Worker processes (more than 1 needs a Qdrant server)."
    ),
    ssl_certfile: str | None = typer.Option(None, "--ssl-certfile", help="TLS certificate chain (PEM); serves HTTPS, TLS 1.2+."),
    ssl_keyfile: str | None = typer.Option(None, "--ssl-keyfile", help="TLS private key (PEM)."),
) -> None:
    """Serve the /api/v1 HTTP API until interrupted (SIGTERM drains in-flight requests)."""
    quiet_prefect()
    settings()
    api_settings()
    from api.server import serve

    try:
        serve(host=host, port=port, workers=workers, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
    except Exception as exc:  # noqa: BLE001 - one line, as every command
        from cli.common import describe

        fail(*describe(exc))


ScopesOption = typer.Option(..., "--scopes", help="Comma-separated: embeddings, search, workflows, metrics, admin.")
CollectionsOption = typer.Option(
    "", "--collections", help="Comma-separated collection names or patterns it reaches: 'team-a-*,shared' ('*': every one). "
    "None given: no collection.",
)
SourcesOption = typer.Option(
    "", "--sources", help="Comma-separated absolute folders and s3://bucket/prefix its workflows may read, within the "
    "service's own ('*': all the service's). None given: no source.",
)


def _checked(work: Callable[[], T]) -> T:
    """An option's value checked, or its one-line error (exit code 2)."""
    try:
        return work()
    except ConfigurationError as exc:
        fail(str(exc))


def _actor() -> Actor:
    from citadel.apikeys import Actor
    from citadel.audit import cli_actor

    return Actor(cli_actor())


async def _keys() -> tuple[Registry, ApiKeys]:
    from citadel.apikeys import ApiKeys
    from citadel.registry import Registry

    registry = Registry(settings().registry_url)
    await registry.init()
    return registry, ApiKeys(registry)


def _when(moment: dt.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def reach_note(scopes: Sequence[str], collections: Sequence[str], sources: Sequence[str]) -> str | None:
    """What a key or token without grants cannot reach, in a line (nothing for admin, which reaches all)."""
    if "admin" in scopes:
        return None
    if not collections:
        extra = " and no source (--sources)" if not sources else ""
        return f"no --collections given: it reaches no collection{extra}"
    if "workflows" in scopes and not sources:
        return "no --sources given: its workflows may read no source"
    return None


def _reach(scopes: Sequence[str], collections: Sequence[str], sources: Sequence[str]) -> str:
    from citadel.auth import grants_of

    return grants_of(scopes, collections, sources).describe()


@apikey_app.command("create")
def apikey_create(
    name: str = typer.Option(..., "--name", help="What the key is for (shown in lists)."),
    scopes: str = ScopesOption,
    collections: str = CollectionsOption,
    sources: str = SourcesOption,
    rate_limits: str = typer.Option(
        "", "--rate-limits", help="Its own limits, as tight as the service's or tighter: '5/second;100/minute'."
    ),
    expires_in: str | None = typer.Option(None, "--expires-in", help="It stops working after: 12h, 30d, 900s (default: never)."),
    as_json: bool = JsonOption,
) -> None:
    """Create a key; its value is printed this once and stored only as a hash."""
    from citadel.apikeys import check_name, check_tier
    from citadel.auth import parse_scopes, parse_ttl
    from citadel.grants import parse_collections, parse_sources

    label = _checked(lambda: check_name(name))
    checked = _checked(lambda: parse_scopes(scopes))
    granted, readable = _checked(lambda: parse_collections(collections)), _checked(lambda: parse_sources(sources))
    seconds = _checked(lambda: parse_ttl(expires_in, option="--expires-in")) if expires_in is not None else None
    tier = _checked(lambda: check_tier(rate_limits, api_settings().api_rate_limits)) if rate_limits.strip() else ""

    async def create() -> ApiKeyCreated:
        registry, keys = await _keys()
        try:
            return await keys.create(label, checked, collections=granted, sources=readable, rate_limits=tier,
                                     expires_in_s=seconds, actor=_actor())
        finally:
            await registry.aclose()

    created = run(create)
    if note := reach_note(created.scopes, created.collections, created.sources):
        err.print(f"note: {note}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(created)
        return
    out.print(f"created key {created.key_id} ({created.name}; scopes {', '.join(created.scopes)})", highlight=False)
    out.print(f"reaches {_reach(created.scopes, created.collections, created.sources)}", highlight=False)
    limits = f"rate limits {created.rate_limits}" if created.rate_limits else "the service's rate limits"
    expiry = f"expires {_when(created.expires_at)}" if created.expires_at else "never expires"
    out.print(f"{limits}; {expiry}", highlight=False)
    out.print("send it as the X-API-Key header; it is shown only now:", highlight=False)
    out.print(created.key, highlight=False, soft_wrap=True)


def _expiry(record: ApiKeyRecord, now: dt.datetime) -> str:
    if record.expires_at is None:
        return "never expires"
    return f"{'expired' if record.expires_at <= now else 'expires'} {_when(record.expires_at)}"


def key_state(record: ApiKeyRecord, now: dt.datetime) -> str:
    """active, expired, revoked, or rotated -> the key that replaced it."""
    if record.replaced_by:
        return f"rotated -> {record.replaced_by}"
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= now:
        return "expired"
    return "active"


def key_lines(record: ApiKeyRecord, now: dt.datetime, width: int) -> list[str]:
    """A key as lines of at most ``width`` characters: its id, name and state; then its scopes and
    collections; then its expiry and last use (UTC)."""
    reach = "every collection (admin)" if "admin" in record.scopes else ",".join(record.collections) or "none"
    used = _when(record.last_used_at) if record.last_used_at else "never"
    wrap = textwrap.TextWrapper(width=width, initial_indent="", subsequent_indent="    ", break_on_hyphens=False)
    lines = wrap.wrap(f"{record.key_id}  {record.name}  {key_state(record, now)}")
    wrap.initial_indent = "    "
    lines += wrap.wrap(f"scopes {','.join(record.scopes)}; collections {reach}")
    lines += wrap.wrap(f"{_expiry(record, now)}; last used {used}")
    return lines


@apikey_app.command("list")
def apikey_list(
    revoked: bool = typer.Option(False, "--revoked", help="Include revoked keys."), as_json: bool = JsonOption
) -> None:
    """The keys with their scopes, collections, expiry, last use and state (never their values)."""

    async def listed() -> list[ApiKeyRecord]:
        registry, keys = await _keys()
        try:
            return await keys.list(include_revoked=revoked)
        finally:
            await registry.aclose()

    records = run(listed)
    if as_json:
        print_json(records)
        return
    if not records:
        out.print("no API keys" + ("" if revoked else " (--revoked lists revoked ones too)"), highlight=False)
        return
    now = dt.datetime.now(dt.UTC)
    for record in records:
        for line in key_lines(record, now, max(min(out.width, 80), 40)):
            out.print(line, highlight=False, markup=False, soft_wrap=True)


def _grace(text: str) -> int:
    """``--grace``: a duration, or 0 for at once."""
    from citadel.auth import parse_ttl

    if text.strip().lower().rstrip("smhd") == "0":
        return 0
    return _checked(lambda: parse_ttl(text, option="--grace"))


@apikey_app.command("rotate")
def apikey_rotate(
    key_id: str = typer.Argument(..., help="The key id `citadel apikey list` shows."),
    grace: str = typer.Option("1h", "--grace", help="How long the old key keeps working: 15m, 1h, 7d; 0 stops it at once."),
    as_json: bool = JsonOption,
) -> None:
    """Issue a new key with the old one's name, scopes, grants, limits and lifetime; the old one
    stops after --grace (or at its own expiry, if sooner)."""
    grace_s = _grace(grace)

    async def rotate() -> tuple[ApiKeyCreated, ApiKeyRecord]:
        registry, keys = await _keys()
        try:
            return await keys.rotate(key_id, grace_s, actor=_actor())
        finally:
            await registry.aclose()

    created, old = run(rotate)
    if as_json:
        print_json({"created": created, "rotated": old})
        return
    out.print(f"rotated key {old.key_id} into {created.key_id} ({created.name}; scopes {', '.join(created.scopes)})", highlight=False)
    if old.revoked_at is not None or old.expires_at is None:
        out.print(f"{old.key_id} is refused from now on", highlight=False)
    else:
        out.print(f"{old.key_id} keeps working until {_when(old.expires_at)}, then is refused", highlight=False)
    out.print("send the new key as the X-API-Key header; it is shown only now:", highlight=False)
    out.print(created.key, highlight=False, soft_wrap=True)


@apikey_app.command("revoke")
def apikey_revoke(key_id: str = typer.Argument(..., help="The key id `citadel apikey list` shows."), as_json: bool = JsonOption) -> None:
    """Revoke a key: every API process refuses it from its next request (keys are read from the registry, never cached)."""

    async def revoke() -> ApiKeyRecord:
        registry, keys = await _keys()
        try:
            return await keys.revoke(key_id, actor=_actor())
        finally:
            await registry.aclose()

    record = run(revoke)
    if as_json:
        print_json(record)
    else:
        out.print(f"revoked key {record.key_id} ({record.name})", highlight=False)


@token_app.command("create")
def token_create(
    subject: str = typer.Option(..., "--subject", help="Who the token is for (its `sub`)."),
    scopes: str = ScopesOption,
    collections: str = CollectionsOption,
    sources: str = SourcesOption,
    ttl: str = typer.Option("1h", "--ttl", help="Lifetime: 900s, 15m, 1h, 7d."),
    as_json: bool = JsonOption,
) -> None:
    """Mint an HS256 token with CITADEL_JWT_SECRET (and its issuer and audience when set), its
    grants in its collections and sources claims. The token alone goes to stdout, its grants to stderr."""
    from citadel.auth import expires_at, mint_token, parse_scopes, parse_ttl
    from citadel.grants import parse_collections, parse_sources

    seconds = _checked(lambda: parse_ttl(ttl))
    checked = _checked(lambda: parse_scopes(scopes))
    granted, readable = list(_checked(lambda: parse_collections(collections))), list(_checked(lambda: parse_sources(sources)))
    token = _checked(lambda: mint_token(api_settings(), subject, checked, seconds, collections=granted, sources=readable))
    created = TokenCreated(token=token, subject=subject, scopes=checked, collections=granted, sources=readable,
                           expires_at=expires_at(seconds))
    if note := reach_note(checked, granted, readable):
        err.print(f"note: {note}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(created)
        return
    err.print(f"token for {subject} (scopes {', '.join(checked)}) reaches {_reach(checked, granted, readable)}; "
              f"expires {_when(created.expires_at)}", highlight=False)
    out.print(token, highlight=False, soft_wrap=True)
