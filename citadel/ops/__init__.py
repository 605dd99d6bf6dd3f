"""Operations: backups and their restore, the doctor's checks, status, and metrics derived from the
registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from citadel.exports import lazy_exports

if TYPE_CHECKING:
    from citadel.ops.backup.create import create_backup
    from citadel.ops.backup.manifest import BackupError, CollectionCounts, Manifest
    from citadel.ops.backup.restore import restore_backup
    from citadel.ops.backup.retention import list_backups, prune_backups, resolve_backup, retained
    from citadel.ops.backup.verify import verify_backup
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
    "BackupError": "backup.manifest",
    "CollectionCounts": "backup.manifest",
    "Manifest": "backup.manifest",
    "collect_status": "status",
    "create_backup": "backup.create",
    "list_backups": "backup.retention",
    "prune_backups": "backup.retention",
    "registry_families": "runmetrics",
    "resolve_backup": "backup.retention",
    "restore_backup": "backup.restore",
    "retained": "backup.retention",
    "run_checks": "doctor",
    "verify_backup": "backup.verify",
})
