"""``citadel audit``: read the audit trail of the configured registry.

Who created, rotated or revoked a key, switched or rolled back a collection, restored a backup,
called an admin route, and every refusal: one append-only table in the registry, which the HTTP
service, the flows and the CLI write to. Lines never hold a key, a token or a password.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from typing import TYPE_CHECKING

import typer

from citadel.errors import ConfigurationError
from cli.common import JsonOption, fail, out, print_json, run, settings

if TYPE_CHECKING:
    from citadel.models import AuditEntry

SINCE_HELP = "From this long ago (30m, 1h, 7d) or this time (2025-01-31T12:00; UTC unless it names its zone)."


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``--since``: a duration back from now, or an ISO time (UTC when it names no zone)."""
    from citadel.auth import parse_ttl

    now = now or dt.datetime.now(dt.UTC)
    try:
        return now - dt.timedelta(seconds=parse_ttl(text, option="--since"))
    except ConfigurationError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigurationError(
            f"--since {text!r}: give a duration such as 1h or 7d, or a time such as 2025-01-31T12:00 (UTC unless it says)"
        ) from None
    return moment.astimezone(dt.UTC) if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


async def read_trail(since: dt.datetime | None, limit: int, actor: str | None) -> list[AuditEntry]:
    """The newest ``limit`` lines from ``since`` on, by ``actor`` if given; oldest first."""
    from citadel.audit import AuditLog
    from citadel.registry import Registry

    registry = Registry(settings().registry_url)
    try:
        await registry.init()
        return await AuditLog(registry).read(since=since, limit=limit, actor=actor)
    finally:
        await registry.aclose()


def printable(text: str) -> str:
    """``text`` with control and format characters spelled out (``\\x1b``): a line a caller wrote
    into (a token's subject, a route) must not drive the reader's terminal."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


def render(entry: AuditEntry, width: int) -> list[str]:
    """An entry as lines of at most ``width`` characters: when, who, from where, what, of what and
    how it ended; then its detail, indented."""
    parts = (f"{entry.at:%Y-%m-%d %H:%M:%S}", entry.actor, entry.address, entry.action, entry.target, entry.outcome)
    wrap = textwrap.TextWrapper(width=width, subsequent_indent="    ", break_on_hyphens=False)
    lines = wrap.wrap("  ".join(printable(part) for part in parts if part))
    if entry.detail:
        wrap.initial_indent = "    "
        lines += wrap.wrap(printable(entry.detail))
    return lines


def audit(
    since: str | None = typer.Option(None, "--since", help=SINCE_HELP),
    actor: str | None = typer.Option(None, "--actor", help="Only this actor's lines: cli:<user>, key:<id>, jwt:<subject>, anonymous."),
    limit: int = typer.Option(100, "--limit", min=1, max=100_000, help="At most the N newest lines."),
    as_json: bool = JsonOption,
) -> None:
    """The audit trail, newest last (times in UTC): key changes, switches, rollbacks, restores,
    admin calls and refusals, with who asked and from where."""
    try:
        start = parse_since(since) if since is not None else None
    except ConfigurationError as exc:
        fail(str(exc))
    entries: list[AuditEntry] = run(lambda: read_trail(start, limit, actor))
    if as_json:
        print_json(entries)
        return
    if not entries:
        out.print("no audit lines" + (" match" if since is not None or actor is not None else " yet"), highlight=False)
        return
    width = max(min(out.width, 80), 40)
    for entry in entries:
        for line in render(entry, width):
            out.print(line, highlight=False, markup=False, soft_wrap=True)
