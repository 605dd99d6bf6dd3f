"""``citadel backup``: back up the registry and the vectors, check a backup, restore one, keep a few.

A systemd timer runs ``citadel backup create --keep-daily 7 --keep-weekly 4``. Redis is not
backed up: it is the embedding cache, and a cold cache only costs time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from cli.common import JsonOption, describe, err, fail, out, print_json, run, settings

if TYPE_CHECKING:
    from citadel.ops import CollectionCounts

backup_app = typer.Typer(
    no_args_is_help=True,
    help="Back up the registry and the vectors, check a backup, restore one, and keep the last few.",
)

T = TypeVar("T")


def _plainly(work: Callable[[], T]) -> T:
    """Synchronous backup work, with the one-line errors of every command (:func:`cli.common.run`'s)."""
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        fail(*describe(exc))


ToOption = typer.Option(None, "--to", help="Folder of the backups (default: CITADEL_BACKUP_DIR, <data dir>/backups).")


def _step(as_json: bool) -> Callable[[str], None] | None:
    """Progress lines on stderr for a person at a terminal; nothing for scripts."""
    if as_json or not err.is_terminal:
        return None
    return lambda message: err.print(f"[dim]{message}…[/dim]", highlight=False)


def _human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _totals(collections: Sequence[CollectionCounts]) -> str:
    documents = sum(c.documents for c in collections)
    chunks = sum(c.chunks for c in collections)
    points = sum(c.points or 0 for c in collections)
    return f"{len(collections)} collections, {documents} documents, {chunks} chunks, {points} points"


@backup_app.command("create")
def create(
    to: Path | None = ToOption,
    keep_daily: int | None = typer.Option(None, "--keep-daily", min=0, help="Then keep the newest backup of each of the last N days."),
    keep_weekly: int | None = typer.Option(None, "--keep-weekly", min=0, help="And of each of the last M ISO weeks."),
    as_json: bool = JsonOption,
) -> None:
    """Back up the registry, the vectors and the configuration (without secrets) into a new folder."""
    from citadel.ops import create_backup, prune_backups

    config = settings()
    directory = to or config.backup_dir
    summary = run(lambda: create_backup(config, directory, on_step=_step(as_json)))
    if keep_daily is not None or keep_weekly is not None:
        summary.pruned = _plainly(lambda: prune_backups(directory, keep_daily or 0, keep_weekly or 0)).deleted
    if as_json:
        print_json(summary)
        return
    out.print(
        f"backup [bold]{summary.name}[/bold] written to {summary.path}: {_totals(summary.collections)}, "
        f"{_human_size(summary.bytes)} in {summary.duration_s:.2f}s",
        highlight=False, soft_wrap=True,
    )
    for name in summary.pruned:
        out.print(f"pruned {name}", highlight=False)


@backup_app.command("verify")
def verify(
    path: Path = typer.Argument(..., help="A backup folder (or the name of one in the backup folder)."),
    as_json: bool = JsonOption,
) -> None:
    """Check a backup without restoring it: checksums, SQLite integrity, the Postgres dump, counts."""
    from citadel.ops import resolve_backup, verify_backup

    config = settings()
    report = _plainly(lambda: verify_backup(resolve_backup(path, config)))
    if as_json:
        print_json(report)
    elif report.ok:
        assert report.backup is not None
        out.print(
            f"[green]ok[/green]  {report.path}: {report.files_checked} files match their checksums; "
            f"{_totals(report.backup.collections)}",
            highlight=False, soft_wrap=True,
        )
    else:
        for problem in report.problems:
            out.print(f"[red]FAIL[/red]  {problem}", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if report.ok else 1)


@backup_app.command("restore")
def restore(
    path: Path = typer.Argument(..., help="A backup folder (or the name of one in the backup folder)."),
    force: bool = typer.Option(False, "--force", help="Replace what a non-empty target registry and store hold."),
    as_json: bool = JsonOption,
) -> None:
    """Restore a backup into the configured registry and vector store (empty ones, unless --force);
    the restored registry's audit trail gets a backup.restored line."""
    from citadel.audit import cli_actor
    from citadel.ops import resolve_backup, restore_backup

    config = settings()
    where = resolve_backup(path, config)
    if not where.exists():
        fail(f"{path} does not exist: give a backup folder, or a name from `citadel backup list`")
    result = run(lambda: restore_backup(config, where, force=force, on_step=_step(as_json), actor=cli_actor()))
    if as_json:
        print_json(result)
        return
    out.print(
        f"restored [bold]{result.name}[/bold] ({result.registry} registry, {result.vectors} vectors) in {result.duration_s:.2f}s: "
        f"{_totals(result.collections)}",
        highlight=False, soft_wrap=True,
    )
    for alias, name in result.aliases.items():
        out.print(f"alias {alias} -> {name}", highlight=False)


@backup_app.command("list")
def list_(to: Path | None = ToOption, as_json: bool = JsonOption) -> None:
    """The complete backups, newest first (interrupted ones are never listed)."""
    from citadel.ops import list_backups

    config = settings()
    backups = _plainly(lambda: list_backups(to or config.backup_dir))
    if as_json:
        print_json(backups)
        return
    if not backups:
        out.print(f"no backups in {to or config.backup_dir}", highlight=False)
        return
    for backup in backups:
        out.print(f"{backup.name}  {_human_size(backup.bytes):>10}  {_totals(backup.collections)}", highlight=False)


@backup_app.command("prune")
def prune(
    to: Path | None = ToOption,
    keep_daily: int = typer.Option(..., "--keep-daily", min=0, help="Keep the newest backup of each of the last N days."),
    keep_weekly: int = typer.Option(..., "--keep-weekly", min=0, help="And of each of the last M ISO weeks."),
    as_json: bool = JsonOption,
) -> None:
    """Delete the backups the retention does not keep (never the newest, never an incomplete one)."""
    from citadel.ops import prune_backups

    config = settings()
    result = _plainly(lambda: prune_backups(to or config.backup_dir, keep_daily, keep_weekly))
    if as_json:
        print_json(result)
        return
    for name in result.deleted:
        out.print(f"deleted {name}", highlight=False)
    out.print(f"kept {len(result.kept)} backups, deleted {len(result.deleted)}", highlight=False)
