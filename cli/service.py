"""``citadel api``, ``citadel apikey`` and ``citadel token``: serve the HTTP API and manage who may call it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from citadel.models import ApiKeyCreated, ApiKeyRecord, TokenCreated
from cli.common import JsonOption, fail, out, print_json, run, settings
from cli.prefectenv import quiet_prefect

if TYPE_CHECKING:
    from citadel.apikeys import ApiKeys
    from citadel.apisettings import ApiSettings
    from citadel.registry import Registry

apikey_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys of the HTTP service.")
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


async def _keys() -> tuple[Registry, ApiKeys]:
    from citadel.apikeys import ApiKeys
    from citadel.registry import Registry

    registry = Registry(settings().registry_url)
    await registry.init()
    return registry, ApiKeys(registry)


@apikey_app.command("create")
def apikey_create(
    name: str = typer.Option(..., "--name", help="What the key is for (shown in lists)."),
    scopes: str = typer.Option(..., "--scopes", help="Comma-separated: embeddings, search, workflows, metrics, admin."),
    as_json: bool = JsonOption,
) -> None:
    """Create a key; its value is printed this once and stored only as a hash."""

    async def create() -> ApiKeyCreated:
        registry, keys = await _keys()
        try:
            return await keys.create(name, scopes.split(","))
        finally:
            await registry.aclose()

    created = run(create)
    if as_json:
        print_json(created)
        return
    out.print(f"created key {created.key_id} ({created.name}; scopes {', '.join(created.scopes)})", highlight=False)
    out.print("send it as the X-API-Key header; it is shown only now:", highlight=False)
    out.print(created.key, highlight=False, soft_wrap=True)


@apikey_app.command("list")
def apikey_list(
    revoked: bool = typer.Option(False, "--revoked", help="Include revoked keys."), as_json: bool = JsonOption
) -> None:
    """The keys with their scopes and last use (never their values)."""

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
    table = Table(title="API keys", title_justify="left")
    for column in ("key id", "name", "scopes", "created", "last used", "revoked"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(
            r.key_id, r.name, ",".join(r.scopes), f"{r.created_at:%Y-%m-%d %H:%M}",
            f"{r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "-", f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "",
        )
    out.print(table)


@apikey_app.command("revoke")
def apikey_revoke(key_id: str = typer.Argument(..., help="The key id `citadel apikey list` shows."), as_json: bool = JsonOption) -> None:
    """Revoke a key: refused by every API process within CITADEL_API_KEY_CACHE_S seconds."""

    async def revoke() -> ApiKeyRecord:
        registry, keys = await _keys()
        try:
            return await keys.revoke(key_id)
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
    scopes: str = typer.Option(..., "--scopes", help="Comma-separated: embeddings, search, workflows, metrics, admin."),
    ttl: str = typer.Option("1h", "--ttl", help="Lifetime: 900s, 15m, 1h, 7d."),
    as_json: bool = JsonOption,
) -> None:
    """Mint an HS256 token with CITADEL_JWT_SECRET (and its issuer and audience when set)."""
    from citadel.auth import expires_at, mint_token, parse_scopes, parse_ttl
    from citadel.errors import ConfigurationError

    try:
        seconds = parse_ttl(ttl)
        checked = parse_scopes(scopes)
        token = mint_token(api_settings(), subject, checked, seconds)
    except ConfigurationError as exc:
        fail(str(exc))
    created = TokenCreated(token=token, subject=subject, scopes=checked, expires_at=expires_at(seconds))
    if as_json:
        print_json(created)
    else:
        out.print(token, highlight=False, soft_wrap=True)
