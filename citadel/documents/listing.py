"""Listing a source completely before anything is read: a folder, a glob, one file, or the objects
under an ``s3://`` prefix (inside its sandbox roots when it has them), sharded, and split into
groups whose loading keeps memory bounded.

A sandboxed listing (the HTTP API's, given :class:`~citadel.documents.sourceroots.SourceRoots`) holds
only files whose real path lies inside its roots (:mod:`citadel.documents.sourceroots`). Without roots
(the CLI) symlinks are followed as documented.
"""

from __future__ import annotations

import errno
import glob
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from citadel.documents.s3uri import is_s3_uri, parse_s3_uri
from citadel.documents.sourceroots import OUTSIDE_ROOTS, SourceRoots, glob_inside, inside
from citadel.documents.suffixes import SUPPORTED_SUFFIXES
from citadel.errors import ConfigurationError

T = TypeVar("T")

if TYPE_CHECKING:  # obstore and botocore are imported only by a source in object storage
    from citadel.documents.objectstore import ObjectEntry, S3Source
    from citadel.settings import Settings


@dataclass
class SourceListing:
    """What one source holds. ``complete`` means documents missing from it may be deleted;
    ``problems`` names the folders that could not be read. A sandboxed listing keeps its
    ``roots`` (checked again when each file is opened) and the entries it left out because they
    lead outside them (``outside``)."""

    key: str
    paths: list[Path]
    complete: bool
    problems: list[str] = field(default_factory=list)
    roots: SourceRoots | None = None
    outside: list[str] = field(default_factory=list)
    objects: list[ObjectEntry] = field(default_factory=list)  # an s3:// source's, with their ETags and sizes
    store: S3Source | None = None  # where ``objects`` are fetched from

    @property
    def count(self) -> int:
        """The files or objects listed."""
        return len(self.paths) + len(self.objects)


def list_objects_source(uri: str, settings: Settings | None = None, roots: SourceRoots | None = None) -> SourceListing:
    """The listing of an ``s3://`` source: its access checked first (one line, exit 2, for a
    missing bucket, refused credentials or an unreachable endpoint), then every document object
    with its ETag and size, nothing fetched. A sandboxed run (``roots``) lists only a bucket and
    prefix its allowlist holds."""
    from citadel.documents.objectstore import check_access  # obstore and botocore, only for object storage
    from citadel.settings import Settings

    location = parse_s3_uri(uri)
    if roots is not None and not roots.holds_location(location):
        raise ConfigurationError(
            f"{location.uri} is not under a bucket and prefix this service may index (CITADEL_API_SOURCE_BUCKETS); it was not read"
        )
    source = check_access(location, settings if settings is not None else Settings())
    return SourceListing(location.uri, [], True, roots=roots, objects=source.list_objects_sync(), store=source)


def _missing_path(text: str) -> ConfigurationError:
    """Why ``text`` cannot be listed: a symlink loop, a broken symlink, or nothing there."""
    try:
        os.stat(text)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return ConfigurationError(f"path {text!r} is a symlink loop (a link that leads back to itself); fix or remove the link")
    if os.path.islink(text):
        return ConfigurationError(f"path {text!r} is a symlink to {os.readlink(text)!r}, which does not exist")
    return ConfigurationError(f"path {text!r} does not exist; give a directory, a file or a glob of documents")


def list_source(
    source: str | os.PathLike[str], exclude: Sequence[str | os.PathLike[str]] = (), roots: SourceRoots | None = None,
    settings: Settings | None = None,
) -> SourceListing:
    """List the supported files of a directory (recursively), a glob pattern or one file, or the
    objects under an ``s3://bucket/prefix`` (with the store of ``settings``, checked first).

    Hidden files and folders (names starting with ``.``) and the folders in ``exclude`` (Citadel's
    own data folder) are never listed. With ``roots`` (a sandboxed run) a path must resolve inside
    them, and a glob or a walk never enters a folder, nor lists a file, that resolves outside them:
    those are kept in ``outside``, by the name that leads out, and never read.
    """
    text = str(source)
    if is_s3_uri(text):
        return list_objects_source(text, settings, roots)
    path = Path(text).expanduser()
    skipped = [Path(folder).resolve() for folder in exclude]
    if glob.has_magic(text):
        pattern = path if path.is_absolute() else Path.cwd() / path
        outside: list[str] = []
        if roots is not None:
            found, outside = glob_inside(pattern, roots)
        else:
            found = [Path(p) for p in glob.glob(str(pattern), recursive=True)]
        paths = sorted(
            p for p in found if p.suffix.lower() in SUPPORTED_SUFFIXES and not inside(p.resolve(), skipped) and p.is_file()
        )
        return SourceListing(str(pattern), paths, True, roots=roots, outside=outside)
    if roots is not None and not roots.holds(path):  # checked before anything is said about what lies outside
        raise ConfigurationError(f"path {text!r} {OUTSIDE_ROOTS}; it was not read")
    if not path.exists():
        raise _missing_path(text)
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise ConfigurationError(f"{path} is not a supported document ({', '.join(SUPPORTED_SUFFIXES)})")
        return SourceListing(str(path), [path], True, roots=roots)
    paths, unreadable, outside = _walk(path, skipped, roots)
    return SourceListing(str(path), paths, complete=not unreadable, problems=unreadable, roots=roots, outside=outside)


def _walk(root: Path, skipped: Sequence[Path] = (), roots: SourceRoots | None = None) -> tuple[list[Path], list[str], list[str]]:
    """Supported files under ``root`` (hidden files and folders and ``skipped`` folders left out),
    and the folders that could not be read. A folder that fails to list must not look empty:
    that would prune it. Symlinked folders are not entered; with ``roots``, a file that resolves
    outside them is left out, and named in the third list."""
    unreadable: list[str] = []
    found: list[Path] = []
    outside: list[str] = []

    def failed(exc: OSError) -> None:
        unreadable.append(f"{exc.filename}: {exc.strerror or exc}")

    for folder, subfolders, files in os.walk(root, onerror=failed):
        subfolders[:] = [
            name for name in subfolders
            if not name.startswith(".") and not (skipped and inside(Path(folder, name).resolve(), skipped))
        ]
        if roots is not None:
            outside.extend(str(Path(folder, name)) for name in subfolders if not roots.holds(Path(folder, name)))
        for name in files:
            candidate = Path(folder, name)
            if name.startswith(".") or candidate.suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            if roots is not None and not roots.holds(candidate):
                outside.append(str(candidate))
                continue
            if candidate.is_file():
                found.append(candidate)
    return sorted(found), unreadable, outside


def shard_listing(listing: SourceListing, shard: int, shards: int) -> SourceListing:
    """The files of ``listing`` that belong to ``shard`` of ``shards`` (still a complete listing of that shard)."""
    from citadel.documents.sharding import shard_of

    paths = [p for p in listing.paths if shard_of(str(p), shards) == shard]
    objects = [entry for entry in listing.objects if shard_of(entry.uri, shards) == shard]
    return SourceListing(listing.key, paths, listing.complete, listing.problems, listing.roots, listing.outside, objects, listing.store)


@dataclass
class SourceGroup:
    """A group of files, objects or inline records to load together, with progress in source units."""

    paths: list[Path]
    records: list[dict[str, Any]]
    done: int
    total: int
    roots: SourceRoots | None = None  # a sandboxed listing's, checked again as each file is opened
    objects: list[ObjectEntry] = field(default_factory=list)
    store: S3Source | None = None


def iter_groups(
    listing: SourceListing | None,
    records: Sequence[dict[str, Any]] | None,
    *,
    max_documents: int,
    max_bytes: int,
) -> Iterator[SourceGroup]:
    """Split a source into groups of at most ``max_documents`` files, objects or records and about
    ``max_bytes`` of files or objects, so that loading one group at a time keeps memory bounded."""
    if records is not None:
        total = len(records)
        for start in range(0, total, max_documents):
            part = list(records[start : start + max_documents])
            yield SourceGroup([], part, start + len(part), total)
        if total == 0:
            yield SourceGroup([], [], 0, 0)
        return
    assert listing is not None
    if listing.store is not None:  # cut by the listed sizes: nothing is fetched to cut them
        for objects, done, total in _cut(listing.objects, lambda entry: entry.size, max_documents, max_bytes):
            yield SourceGroup([], [], done, total, listing.roots, objects, listing.store)
        return
    for paths, done, total in _cut(listing.paths, _file_size, max_documents, max_bytes):
        yield SourceGroup(paths, [], done, total, listing.roots)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # load_file reports the file; here it only counts toward the group


def _cut(items: Sequence[T], size_of: Callable[[T], int], max_documents: int, max_bytes: int) -> Iterator[tuple[list[T], int, int]]:
    """``items`` in groups of at most ``max_documents`` and about ``max_bytes``, each with how many
    items were done once it is and the total; one empty group for no items."""
    total = len(items)
    group: list[T] = []
    size = 0
    for done, item in enumerate(items, start=1):
        group.append(item)
        size += size_of(item)
        if len(group) >= max_documents or size >= max_bytes:
            yield group, done, total
            group, size = [], 0
    if group or total == 0:
        yield group, total, total
