"""Operations: backups and their restore, the doctor's checks, status, and metrics derived from the
registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from citadel.exports import lazy_exports

if TYPE_CHECKING:
    from citadel.ops.backup import (
        BackupError,
        CollectionCounts,
        Manifest,
        create_backup,
        list_backups,
        prune_backups,
        resolve_backup,
        restore_backup,
        retained,
        verify_backup,
    )
    from citadel.ops.doctor import run_checks
    from citadel.ops.runmetrics import registry_families
    from citadel.ops.status import collect_status

__all__ = [
    "BackupError",
    "CollectionCounts",
    "Manifest",
    "collect_status",
    "create_backup",
    "list_backups",
    "prune_backups",
    "registry_families",
    "resolve_backup",
    "restore_backup",
    "retained",
    "run_checks",
    "verify_backup",
]

__getattr__ = lazy_exports(__name__, {
    "BackupError": "backup",
    "CollectionCounts": "backup",
    "Manifest": "backup",
    "collect_status": "status",
    "create_backup": "backup",
    "list_backups": "backup",
    "prune_backups": "backup",
    "registry_families": "runmetrics",
    "resolve_backup": "backup",
    "restore_backup": "backup",
    "retained": "backup",
    "run_checks": "doctor",
    "verify_backup": "backup",
})
