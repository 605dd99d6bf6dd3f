"""Which backups there are and which are kept: the complete ones listed, the retention (newest of
each day and ISO week), pruning, and what an interrupted backup or prune leaves behind."""

from __future__ import annotations

import datetime as dt
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from citadel.errors import ConfigurationError
from citadel.ops.backup.manifest import (
    LEFTOVER,
    LEFTOVER_AGE_S,
    NAME,
    PREFIX,
    STAMP,
    BackupError,
    BackupSummary,
    Manifest,
    PruneResult,
    read_manifest,
)
from citadel.settings import Settings


def complete_backups(directory: Path) -> list[tuple[Path, Manifest]]:
    """The complete backups in ``directory``, newest first (folders named as a backup with a
    readable manifest; interrupted ones, hidden while they were written, are never listed)."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        if not NAME.fullmatch(path.name) or not path.is_dir():
            continue
        try:
            found.append((path, read_manifest(path)))
        except BackupError:
            continue
    return sorted(found, key=lambda item: item[0].name, reverse=True)


def list_backups(directory: Path) -> list[BackupSummary]:
    return [BackupSummary.of(path, manifest) for path, manifest in complete_backups(directory)]


def resolve_backup(path: Path, settings: Settings | None = None) -> Path:
    """``path`` as given, or a backup of that name in the backup folder."""
    if not path.exists() and settings is not None and len(path.parts) == 1 and (settings.backup_dir / path).exists():
        return settings.backup_dir / path
    return path


def backup_time(name: str) -> dt.datetime:
    """The UTC time in a backup's name."""
    match = NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not a backup name ({PREFIX}yyyymmddThhmmssZ)")
    return dt.datetime.strptime(match.group(1), STAMP).replace(tzinfo=dt.UTC)


def retained(times: Sequence[dt.datetime], keep_daily: int, keep_weekly: int) -> set[dt.datetime]:
    """Which of ``times`` the retention keeps: the newest of each of the last ``keep_daily`` days
    and of each of the last ``keep_weekly`` ISO weeks that have a backup, and always the newest.

    Days and weeks without a backup do not count, so a timer that stopped for a while never lets
    the retention delete the last backups there are.
    """
    def day(moment: dt.datetime) -> object:
        return moment.date()

    def week(moment: dt.datetime) -> object:
        return moment.isocalendar()[:2]

    newest_first = sorted(times, reverse=True)
    keep = set(newest_first[:1])
    for limit, period in ((keep_daily, day), (keep_weekly, week)):
        seen: set[object] = set()
        for moment in newest_first:
            key = period(moment)
            if key in seen:
                continue
            if len(seen) >= limit:
                break
            seen.add(key)
            keep.add(moment)
    return keep


def _last_change(path: Path) -> float:
    """The newest modification time of ``path`` and everything under it."""
    newest = path.lstat().st_mtime
    for child in path.rglob("*"):
        try:
            newest = max(newest, child.lstat().st_mtime)
        except OSError:
            continue  # deleted meanwhile
    return newest


def remove_leftovers(directory: Path, older_than_s: float = LEFTOVER_AGE_S) -> list[str]:
    """Delete the hidden folders killed backups and prunes left in ``directory`` once nothing in
    them changed for ``older_than_s`` (a day): a younger one may be a backup still being written."""
    if not directory.is_dir():
        return []
    removed = []
    now = time.time()
    for path in sorted(directory.iterdir()):
        if not LEFTOVER.fullmatch(path.name) or not path.is_dir() or path.is_symlink():
            continue
        if now - _last_change(path) < older_than_s:
            continue
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise BackupError(f"cannot delete {path}, left by an interrupted backup ({exc.strerror}); delete it by hand") from exc
        removed.append(path.name)
    return removed


def prune_backups(directory: Path, keep_daily: int, keep_weekly: int) -> PruneResult:
    """Delete the complete backups in ``directory`` that the retention does not keep, and the
    folders of interrupted backups that have not changed for a day."""
    if keep_daily < 0 or keep_weekly < 0:
        raise ConfigurationError("--keep-daily and --keep-weekly count backups to keep: give 0 or more")
    backups = {backup_time(path.name): path for path, _ in complete_backups(directory)}
    keep = retained(list(backups), keep_daily, keep_weekly)
    deleted = []
    for moment in sorted(backups, reverse=True):
        if moment in keep:
            continue
        path = backups[moment]
        # Renamed first, so a prune killed halfway leaves no half-deleted folder that looks complete.
        doomed = path.with_name(f".{path.name}.deleting-{uuid.uuid4().hex[:8]}")
        path.rename(doomed)
        shutil.rmtree(doomed)
        deleted.append(path.name)
    deleted += remove_leftovers(directory)
    return PruneResult(kept=[backups[m].name for m in sorted(keep, reverse=True)], deleted=deleted)
