"""Reading a corpus: list a source completely, then stream its documents one file at a time.

A file that cannot become a document (empty, binary, not UTF-8, too large, malformed JSON)
becomes a :class:`LoadFailure` with its reason instead of stopping the run.

A sandboxed run (the HTTP API's, given :class:`~citadel.documents.sourceroots.SourceRoots`) reads only
files whose real path lies inside its roots (:mod:`citadel.documents.sourceroots`). Without roots (the CLI)
symlinks are followed as documented.
"""

from __future__ import annotations

import errno
import glob
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from citadel.documents.sourceroots import OUTSIDE_ROOTS, SourceRoots, glob_inside, inside, open_inside
from citadel.errors import ConfigurationError
from citadel.hashing import has_lone_surrogate, sha256_text
from citadel.nesting import DEFAULT_MAX_DEPTH, value_depth_exceeds

SUPPORTED_SUFFIXES = (".txt", ".md", ".rst", ".json", ".jsonl", ".py")


@dataclass
class Document:
    """One text to index, with a stable id and the metadata it carries into the payload."""

    id: str
    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    origin: str = ""  # the file it came from (its shard key); inline documents use their id
    inline: bool = False  # given as a record by the caller, not read from a file

    @property
    def content_hash(self) -> str:
        """Changes when the text or the metadata changes (either one changes the points)."""
        return sha256_text(self.text + "\x00" + json.dumps(self.metadata, sort_keys=True, default=str))


@dataclass
class LoadFailure:
    """A document that could not be read, and why."""

    id: str
    source: str
    reason: str
    stage: str = "load"
    origin: str = ""


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
    source: str | os.PathLike[str], exclude: Sequence[str | os.PathLike[str]] = (), roots: SourceRoots | None = None
) -> SourceListing:
    """List the supported files of a directory (recursively), a glob pattern or one file.

    Hidden files and folders (names starting with ``.``) and the folders in ``exclude`` (Citadel's
    own data folder) are never listed. With ``roots`` (a sandboxed run) a path must resolve inside
    them, and a glob or a walk never enters a folder, nor lists a file, that resolves outside them:
    those are kept in ``outside``, by the name that leads out, and never read.
    """
    text = str(source)
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
    return SourceListing(listing.key, paths, listing.complete, listing.problems, listing.roots, listing.outside)


def _decode(path: Path, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise ValueError("binary file (contains NUL bytes); only text documents can be indexed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 at byte {exc.start}; convert the file to UTF-8") from exc


MAX_METADATA_DEPTH = DEFAULT_MAX_DEPTH
"""A record's metadata goes into the store's payload and the registry as JSON (orjson refuses
past 254 levels): deeper metadata makes that one record a dead letter, not the run a failure."""


def _record_document(raw: Any, default_id: str, source: str, where: str) -> Document:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected an object with a 'text' field, got {type(raw).__name__}")
    text = raw.get("text")
    if not isinstance(text, str):
        raise ValueError(f"{where}: missing a string 'text' field")
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: 'metadata' must be an object")
    if value_depth_exceeds(metadata, MAX_METADATA_DEPTH):
        raise ValueError(f"{where}: 'metadata' nests deeper than {MAX_METADATA_DEPTH} levels; nest its arrays and objects less deeply")
    raw_id = raw.get("id")
    doc_id = default_id if raw_id is None or raw_id == "" else str(raw_id)
    return Document(doc_id, text, source, metadata)


def printable_id(text: str) -> str:
    """``text`` with lone surrogates (undecodable file-name bytes) shown as escapes, safe for any database."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


MAX_ID_CHARS = 1024  # the registry's id columns


def _check_text(doc: Document) -> Document | LoadFailure:
    if has_lone_surrogate(doc.id):
        return LoadFailure(printable_id(doc.id), doc.source, "the document id (file name) is not valid UTF-8; rename it")
    if "\x00" in doc.id:
        return LoadFailure(doc.id.replace("\x00", "\\0"), doc.source, "the document id holds a NUL character; remove it")
    if len(doc.id) > MAX_ID_CHARS:
        return LoadFailure(
            doc.id[: MAX_ID_CHARS - 40] + "...", doc.source,
            f"the document id is {len(doc.id)} characters, over {MAX_ID_CHARS}; use a shorter id",
        )
    if has_lone_surrogate(doc.text):
        return LoadFailure(doc.id, doc.source, "the text holds unpaired UTF-16 surrogates (invalid Unicode); fix its encoding")
    if not doc.text.strip():
        return LoadFailure(doc.id, doc.source, "empty document (no text to index)")
    return doc


def _unreadable(file_id: str, source: str, reason: str) -> LoadFailure:
    """A whole file that could not be read: its origin marks the records it held as still present,
    so a pruning run does not delete them for one bad byte or an I/O error."""
    return LoadFailure(file_id, source, reason, origin=file_id)


def _read(path: Path, max_bytes: int, roots: SourceRoots | None) -> bytes:
    """The bytes of ``path``, refused over ``max_bytes``; with ``roots``, read from the one
    descriptor :func:`open_inside` checked."""
    too_large = "file is {} bytes, over the limit of {} (CITADEL_MAX_FILE_BYTES)"
    if roots is None:
        size = path.stat().st_size
        if size > max_bytes:
            raise ValueError(too_large.format(size, max_bytes))
        return path.read_bytes()
    with os.fdopen(open_inside(path, roots), "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(max_bytes + 1)
    if size > max_bytes or len(data) > max_bytes:
        raise ValueError(too_large.format(max(size, len(data)), max_bytes))
    return data


def load_file(path: Path, source: str, max_bytes: int, roots: SourceRoots | None = None) -> list[Document | LoadFailure]:
    """The documents of one file: one for text files, one per record for .json lists and .jsonl.

    With ``roots`` (a sandboxed run) a file that resolves outside them, also through a symlink
    swapped in since it was listed, is a failure and is never read.
    """
    doc_id = str(path)
    if has_lone_surrogate(doc_id):
        return [LoadFailure(printable_id(doc_id), source, "the file name is not valid UTF-8; rename it")]
    try:
        text = _decode(path, _read(path, max_bytes, roots))
    except (OSError, ValueError) as exc:
        return [_unreadable(doc_id, source, str(exc))]
    base_meta = {"path": str(path), "extension": path.suffix.lower()}
    suffix = path.suffix.lower()
    if suffix not in (".json", ".jsonl"):
        return [_check_text(Document(doc_id, text, source, base_meta, origin=doc_id))]
    out: list[Document | LoadFailure] = []
    if suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            item_id = f"{doc_id}#{number}"
            try:
                doc = _record_document(json.loads(line), item_id, source, f"line {number}")
            except json.JSONDecodeError as exc:
                out.append(LoadFailure(item_id, source, f"line {number}: invalid JSON: {exc}"))
                continue
            except RecursionError:
                out.append(LoadFailure(item_id, source, f"line {number}: JSON nested too deeply to read"))
                continue
            except ValueError as exc:
                out.append(LoadFailure(item_id, source, str(exc)))
                continue
            doc.metadata = {**base_meta, **doc.metadata}
            doc.origin = doc_id
            if doc.id != item_id:
                doc.id = f"{doc_id}#{doc.id}"
            out.append(_check_text(doc))
        return out or [LoadFailure(doc_id, source, "empty document (no records)")]
    try:
        data = json.loads(text)
    except ValueError as exc:
        return [_unreadable(doc_id, source, f"invalid JSON: {exc}")]
    except RecursionError:
        return [_unreadable(doc_id, source, "JSON nested too deeply to read")]
    items = data if isinstance(data, list) else [data]
    for number, raw in enumerate(items):
        item_id = doc_id if not isinstance(data, list) else f"{doc_id}#{number}"
        try:
            doc = _record_document(raw, item_id, source, f"item {number}")
        except ValueError as exc:
            out.append(LoadFailure(item_id, source, str(exc)))
            continue
        doc.metadata = {**base_meta, **doc.metadata}
        doc.origin = doc_id
        if doc.id != item_id:  # ids in a file are scoped to that file, so two files never collide
            doc.id = f"{doc_id}#{doc.id}"
        out.append(_check_text(doc))
    return out or [LoadFailure(doc_id, source, "empty document (no records)")]


def documents_from_records(
    records: Sequence[dict[str, Any]], source: str, offset: int = 0
) -> Iterable[Document | LoadFailure]:
    """Documents given inline as ``{"id", "text", "metadata"}`` objects; ``offset`` numbers them in a longer list."""
    for number, raw in enumerate(records, start=offset):
        try:
            doc = _record_document(raw, "", source, f"document {number}")
        except ValueError as exc:
            fallback = f"{source}#{number}"
            yield LoadFailure(str(raw.get("id", fallback)) if isinstance(raw, dict) else fallback, source, str(exc))
            continue
        if not doc.id:
            yield LoadFailure(f"{source}#{number}", source, f"document {number}: missing an 'id'")
            continue
        doc.origin = doc.id
        doc.inline = True
        yield _check_text(doc)


@dataclass
class SourceGroup:
    """A group of files (or inline records) to load together, with progress in source units."""

    paths: list[Path]
    records: list[dict[str, Any]]
    done: int
    total: int
    roots: SourceRoots | None = None  # a sandboxed listing's, checked again as each file is opened


def iter_groups(
    listing: SourceListing | None,
    records: Sequence[dict[str, Any]] | None,
    *,
    max_documents: int,
    max_bytes: int,
) -> Iterator[SourceGroup]:
    """Split a source into groups of at most ``max_documents`` files or records and about
    ``max_bytes`` of files, so that loading one group at a time keeps memory bounded."""
    if records is not None:
        total = len(records)
        for start in range(0, total, max_documents):
            part = list(records[start : start + max_documents])
            yield SourceGroup([], part, start + len(part), total)
        if total == 0:
            yield SourceGroup([], [], 0, 0)
        return
    assert listing is not None
    total = len(listing.paths)
    group: list[Path] = []
    size = 0
    for done, path in enumerate(listing.paths, start=1):
        group.append(path)
        try:
            size += path.stat().st_size
        except OSError:
            pass  # load_file reports the file; here it only counts toward the group
        if len(group) >= max_documents or size >= max_bytes:
            yield SourceGroup(group, [], done, total, listing.roots)
            group, size = [], 0
    if group or total == 0:
        yield SourceGroup(group, [], total, total, listing.roots)


def load_group(group: SourceGroup, source: str, max_file_bytes: int) -> list[Document | LoadFailure]:
    """The documents of one group, read one file at a time."""
    if group.records:
        return list(documents_from_records(group.records, source, offset=group.done - len(group.records)))
    items: list[Document | LoadFailure] = []
    for path in group.paths:
        items.extend(load_file(path, source, max_file_bytes, group.roots))
    return items
