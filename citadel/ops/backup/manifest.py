"""What a backup is made of: its folder's names, its manifest and the summaries shown of it, and the
counts a registry and a store are checked by."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_core import to_jsonable_python

from citadel.errors import CitadelError
from citadel.models import Result, UTCDateTime
from citadel.registry import chunks, collections, documents, schema_version
from citadel.settings import Settings, masked_url

FORMAT_VERSION = 1
PREFIX = "citadel-backup-"
NAME = re.compile(r"citadel-backup-(\d{8}T\d{6}Z)")
# What a killed backup (or prune) leaves: the hidden folder it was writing (or deleting).
LEFTOVER = re.compile(r"\.citadel-backup-\d{8}T\d{6}Z\.(partial|deleting)-[0-9a-f]{8}")
LEFTOVER_AGE_S = 24 * 3600
STAMP = "%Y%m%dT%H%M%SZ"
MANIFEST = "manifest.json"
SQLITE_REGISTRY = "registry.sqlite"
PG_REGISTRY = "registry.pgdump"
CONFIG = "config.json"
VECTORS = "vectors"

Step = Callable[[str], None]


class BackupError(CitadelError):
    """A backup could not be made, checked or restored (the message says what and what to do)."""


class CollectionCounts(Result):
    """What one collection holds: registry documents (indexed) and chunks, and store points."""

    name: str
    model: str | None = None
    dimensions: int | None = None
    documents: int = 0
    chunks: int = 0
    points: int | None = Field(None, description="None: the vector store has no such collection.")


class FileEntry(Result):
    sha256: str
    bytes: int


class Backend(Result):
    kind: Literal["sqlite", "postgres", "embedded", "server"]
    location: str = Field(description="The database URL or store folder or server URL, password masked.")
    version: str | None = None


class Manifest(Result):
    """``manifest.json``: what a backup holds, and how to check it."""

    format: int
    name: str
    created_at: UTCDateTime
    duration_s: float
    citadel_version: str
    schema_version: int
    registry: Backend
    vectors: Backend
    collections: list[CollectionCounts]
    aliases: dict[str, str] = Field(default_factory=dict, description="Alias name -> collection.")
    files: dict[str, FileEntry]
    not_included: dict[str, str] = Field(default_factory=dict)


class BackupSummary(Result):
    """One complete backup, as ``create`` and ``list`` show it."""

    name: str
    path: str
    created_at: UTCDateTime
    bytes: int
    duration_s: float
    schema_version: int
    registry: str
    vectors: str
    collections: list[CollectionCounts]
    aliases: dict[str, str]
    pruned: list[str] = Field(default_factory=list, description="Backups deleted by the retention after this one.")

    @classmethod
    def of(cls, path: Path, manifest: Manifest) -> BackupSummary:
        return cls(
            name=manifest.name, path=str(path), created_at=manifest.created_at,
            bytes=sum(entry.bytes for entry in manifest.files.values()) + _size(path / MANIFEST),
            duration_s=manifest.duration_s, schema_version=manifest.schema_version,
            registry=manifest.registry.kind, vectors=manifest.vectors.kind,
            collections=manifest.collections, aliases=manifest.aliases,
        )


class VerifyReport(Result):
    """What ``verify`` found: ``ok`` with no problems, else one line per problem naming the file."""

    path: str
    ok: bool
    files_checked: int
    problems: list[str]
    backup: BackupSummary | None = None


class RestoreResult(Result):
    """What a restore wrote, with the counts read back from the restored backends."""

    name: str
    path: str
    duration_s: float
    registry: str
    vectors: str
    replaced: bool = Field(description="Whether a non-empty target was overwritten (--force).")
    collections: list[CollectionCounts]
    aliases: dict[str, str]


class PruneResult(Result):
    kept: list[str]
    deleted: list[str] = Field(
        description="Backups the retention dropped, then the hidden folders interrupted backups left over a day ago."
    )


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def say(on_step: Step | None, message: str) -> None:
    if on_step is not None:
        on_step(message)


def read_manifest(path: Path) -> Manifest:
    """The manifest of the backup at ``path``; a BackupError saying why it is not a complete backup."""
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BackupError(f"{path} is not a backup folder")
    if not manifest_path.is_file():
        raise BackupError(f"{path} has no {MANIFEST}: it is not a complete backup (an interrupted backup never gets one)")
    try:
        return Manifest.model_validate_json(manifest_path.read_bytes())
    except (OSError, ValidationError) as exc:
        reason = str(exc).splitlines()[0]
        raise BackupError(f"{manifest_path}: not a readable backup manifest ({reason})") from exc


def registry_counts(conn: sa.Connection) -> tuple[int, dict[str, CollectionCounts]]:
    """The schema version and the per-collection counts of a registry (same queries on both databases)."""
    version = int(conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0)
    found = {
        row.name: CollectionCounts(name=row.name, model=row.model, dimensions=row.dimensions)
        for row in conn.execute(sa.select(collections.c.name, collections.c.model, collections.c.dimensions))
    }

    def per_collection(table: sa.Table, *where: Any) -> Iterable[tuple[str, int]]:
        query = sa.select(table.c.collection, sa.func.count()).where(*where).group_by(table.c.collection)
        return ((str(name), int(count)) for name, count in conn.execute(query).all())

    for name, count in per_collection(documents, documents.c.status == "indexed"):
        found.setdefault(name, CollectionCounts(name=name)).documents = count
    for name, count in per_collection(chunks):
        found.setdefault(name, CollectionCounts(name=name)).chunks = count
    return version, found


def count_problems(relative: str, expected: Mapping[str, CollectionCounts], found: Mapping[str, CollectionCounts],
                   fields: Sequence[str]) -> list[str]:
    problems = []
    for name in sorted(set(expected) | set(found)):
        for field in fields:
            want = getattr(expected[name], field) if name in expected else 0
            got = getattr(found[name], field) if name in found else 0
            if want != got:
                problems.append(f"{relative}: collection {name} has {got} {field}, the manifest says {want}")
    return problems


def public_settings(settings: BaseModel) -> dict[str, Any]:
    """A settings object as JSON without secrets: secret values left out (URLs kept with the
    password masked), and a password in any other URL masked."""

    def clean(value: Any) -> Any:
        if isinstance(value, SecretStr):
            plain = value.get_secret_value()
            return masked_url(plain) if "://" in plain else "(set; not kept in backups)"
        if isinstance(value, str) and "://" in value:
            return masked_url(value)
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    plain: dict[str, Any] = to_jsonable_python({name: clean(value) for name, value in settings})
    return plain


def config_of(settings: Settings) -> dict[str, Any]:
    """``config.json``: the core's settings and the HTTP service's, without secrets."""
    config: dict[str, Any] = {"settings": public_settings(settings)}
    try:
        from citadel.apisettings import ApiSettings

        config["api_settings"] = public_settings(ApiSettings())
    except ValidationError:
        config["api_settings"] = None  # the HTTP service's settings do not validate here; the core's do
    return config
