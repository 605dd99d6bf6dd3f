"""Reading documents: a file decoded (UTF-8 text, JSON or JSONL records) or parsed (PDF, HTML,
Office, EPUB, in the parser pool of :mod:`citadel.documents.isolation`), or inline records, into
:class:`Document` objects with stable ids; a file that cannot become a document (empty, binary,
not UTF-8, too large, malformed JSON, encrypted, over the parse limits) becomes a
:class:`LoadFailure` with its reason instead of stopping the run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from citadel.documents.formats import RICH_SUFFIXES
from citadel.documents.listing import SourceGroup
from citadel.documents.parsed import ParsedFile, Section
from citadel.documents.sourceroots import SourceRoots, open_inside
from citadel.documents.suffixes import is_rich_suffix
from citadel.hashing import has_lone_surrogate, sha256_text
from citadel.nesting import DEFAULT_MAX_DEPTH, value_depth_exceeds

if TYPE_CHECKING:  # the pool (pebble, the settings) is imported only by a group that parses
    from citadel.documents.isolation import ParseFailure, ParseJob, ParserPool


@dataclass
class Document:
    """One text to index, with a stable id and the metadata it carries into the payload."""

    id: str
    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    origin: str = ""  # the file it came from (its shard key); inline documents use their id
    inline: bool = False  # given as a record by the caller, not read from a file
    sections: list[Section] | None = None  # a parsed file's pages or headings (``text`` is them joined)
    fingerprint: str = ""  # an object's "ETag:size" as read: unchanged, the object is not fetched again

    @property
    def content_hash(self) -> str:
        """Changes when the text, the metadata or where the sections fall changes (each changes the points)."""
        described: Any = self.metadata
        if self.sections:
            described = [self.metadata, [(len(s.text), s.page, s.headings) for s in self.sections]]
        return sha256_text(self.text + "\x00" + json.dumps(described, sort_keys=True, default=str))


@dataclass
class LoadFailure:
    """A document that could not be read, and why."""

    id: str
    source: str
    reason: str
    stage: str = "load"
    origin: str = ""


def _decode(data: bytes) -> str:
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


def unreadable_file(file_id: str, source: str, reason: str) -> LoadFailure:
    """A whole file that could not be read: its origin marks the records it held as still present,
    so a pruning run does not delete them for one bad byte or an I/O error."""
    return LoadFailure(file_id, source, reason, origin=file_id)


def _misnamed(doc_id: str, source: str) -> LoadFailure | None:
    """A file whose name is not valid UTF-8 (undecodable bytes) cannot be an id: its failure, else None."""
    if has_lone_surrogate(doc_id):
        return LoadFailure(printable_id(doc_id), source, "the file name is not valid UTF-8; rename it")
    return None


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
    if (misnamed := _misnamed(doc_id, source)) is not None:
        return [misnamed]
    try:
        data = _read(path, max_bytes, roots)
    except (OSError, ValueError) as exc:
        return [unreadable_file(doc_id, source, str(exc))]
    return decode_documents(doc_id, path.suffix.lower(), data, source, {"path": str(path), "extension": path.suffix.lower()})


def decode_documents(
    doc_id: str, suffix: str, data: bytes, source: str, base_meta: dict[str, Any]
) -> list[Document | LoadFailure]:
    """The documents of a plain file's bytes (a file's or an object's): one for text, one per
    record for .json lists and .jsonl; what cannot be read is a failure with its reason."""
    try:
        text = _decode(data)
    except ValueError as exc:
        return [unreadable_file(doc_id, source, str(exc))]
    if suffix == ".jsonl":
        out = _jsonl_documents(text, doc_id, source, base_meta)
    elif suffix == ".json":
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            return [unreadable_file(doc_id, source, f"invalid JSON: {exc}")]
        except RecursionError:
            return [unreadable_file(doc_id, source, "JSON nested too deeply to read")]
        out = _json_documents(parsed, doc_id, source, base_meta)
    else:
        title = markdown_title(text) if suffix == ".md" else None
        metadata = {**base_meta, "title": title} if title else base_meta
        return [_check_text(Document(doc_id, text, source, metadata, origin=doc_id))]
    return out or [LoadFailure(doc_id, source, "empty document (no records)")]


_MARKDOWN_TITLE = re.compile(r"^#[ \t]+(\S.*?)[ \t#]*$", re.MULTILINE)


def markdown_title(text: str) -> str | None:
    """A Markdown file's title: its first top-level (``# ``) heading within its first 4 KB, so
    that search shows it as it shows a PDF's or a web page's."""
    found = _MARKDOWN_TITLE.search(text[:4096])
    return found.group(1)[:300] if found else None


def _in_file(doc: Document, item_id: str, doc_id: str, base_meta: dict[str, Any]) -> Document | LoadFailure:
    """A record of file ``doc_id``: the file's metadata under its own, and its id scoped to the
    file, so that two files never collide."""
    doc.metadata = {**base_meta, **doc.metadata}
    doc.origin = doc_id
    if doc.id != item_id:
        doc.id = f"{doc_id}#{doc.id}"
    return _check_text(doc)


def _jsonl_documents(text: str, doc_id: str, source: str, base_meta: dict[str, Any]) -> list[Document | LoadFailure]:
    """One document per non-blank line of a .jsonl file; a bad line is a failure of its own."""
    out: list[Document | LoadFailure] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        item_id = f"{doc_id}#{number}"
        try:
            doc = _record_document(json.loads(line), item_id, source, f"line {number}")
        except json.JSONDecodeError as exc:
            out.append(LoadFailure(item_id, source, f"line {number}: invalid JSON: {exc}"))
        except RecursionError:
            out.append(LoadFailure(item_id, source, f"line {number}: JSON nested too deeply to read"))
        except ValueError as exc:
            out.append(LoadFailure(item_id, source, str(exc)))
        else:
            out.append(_in_file(doc, item_id, doc_id, base_meta))
    return out


def _json_documents(data: Any, doc_id: str, source: str, base_meta: dict[str, Any]) -> list[Document | LoadFailure]:
    """The documents of a .json file: one per item of a list, else the one object."""
    out: list[Document | LoadFailure] = []
    items = data if isinstance(data, list) else [data]
    for number, raw in enumerate(items):
        item_id = doc_id if not isinstance(data, list) else f"{doc_id}#{number}"
        try:
            doc = _record_document(raw, item_id, source, f"item {number}")
        except ValueError as exc:
            out.append(LoadFailure(item_id, source, str(exc)))
        else:
            out.append(_in_file(doc, item_id, doc_id, base_meta))
    return out


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


def has_rich_files(group: SourceGroup) -> bool:
    """Whether loading ``group`` parses files or objects (PDF, HTML, Office, EPUB) in the parser pool."""
    return any(is_rich(path) for path in group.paths) or any(is_rich_suffix(PurePosixPath(e.key).suffix) for e in group.objects)


def is_rich(path: Path) -> bool:
    return path.suffix.lower() in RICH_SUFFIXES


def load_group(
    group: SourceGroup, source: str, max_file_bytes: int, parsers: Callable[[], ParserPool] | None = None
) -> list[Document | LoadFailure]:
    """The documents of one group, in its files' order: plain files read one at a time, rich ones
    parsed in parallel in the parser pool (``parsers``, asked for only when the group has one)."""
    if group.records:
        return list(documents_from_records(group.records, source, offset=group.done - len(group.records)))
    parsed: dict[Path, Document | LoadFailure] = {}
    rich = [path for path in group.paths if is_rich(path)]
    if rich:
        from citadel.documents.isolation import shared_pool

        pool = parsers() if parsers is not None else shared_pool()
        parsed = parse_files(rich, source, max_file_bytes, group.roots, pool)
    items: list[Document | LoadFailure] = []
    for path in group.paths:
        if path in parsed:
            items.append(parsed[path])
        else:
            items.extend(load_file(path, source, max_file_bytes, group.roots))
    return items


def parse_files(
    paths: Sequence[Path], source: str, max_bytes: int, roots: SourceRoots | None, pool: ParserPool
) -> dict[Path, Document | LoadFailure]:
    """Rich files parsed in the pool, each read only when a worker is free for it (so the bytes
    held stay bounded): a document each, or a failure with its reason (too large, outside the
    roots, encrypted, over the time or memory limit, ...)."""
    out: dict[Path, Document | LoadFailure] = {}
    items: list[ToParse] = []
    for path in paths:
        doc_id = str(path)
        if (misnamed := _misnamed(doc_id, source)) is not None:
            out[path] = misnamed
            continue
        meta = {"path": doc_id, "extension": path.suffix.lower()}
        items.append(ToParse(doc_id, path.suffix.lower(), meta, partial(_read, path, max_bytes, roots)))
    parsed = parse_items(items, source, pool)
    by_id = {str(path): path for path in paths}
    out.update((by_id[doc_id], item) for doc_id, item in parsed.items())
    return out


@dataclass
class ToParse:
    """A rich file or object to parse: its id, suffix and metadata, and how to read its bytes
    (called when a parser is free; an OSError or ValueError makes it a failure)."""

    doc_id: str
    suffix: str
    metadata: dict[str, Any]
    read: Callable[[], bytes]


def parse_items(items: Sequence[ToParse], source: str, pool: ParserPool) -> dict[str, Document | LoadFailure]:
    """``items`` parsed in the pool, by id: a document each, or a failure with its reason."""
    out: dict[str, Document | LoadFailure] = {}
    sent: list[ToParse] = []

    def jobs() -> Iterator[ParseJob]:
        for item in items:
            try:
                data = item.read()
            except (OSError, ValueError) as exc:
                out[item.doc_id] = unreadable_file(item.doc_id, source, str(exc))
                continue
            sent.append(item)
            yield item.suffix, data, item.doc_id

    for number, result in enumerate(pool.iter_parse(jobs())):
        item = sent[number]
        out[item.doc_id] = _parsed_document(item, source, result)
    return out


def _parsed_document(item: ToParse, source: str, result: ParsedFile | ParseFailure) -> Document | LoadFailure:
    doc_id = item.doc_id
    if not isinstance(result, ParsedFile):
        return unreadable_file(doc_id, source, result.reason)
    metadata: dict[str, Any] = {**item.metadata, "format": result.format}
    if result.title:
        metadata["title"] = result.title
    if result.pages is not None:
        metadata["pages"] = result.pages
    sections = [section for section in result.sections if section.text.strip()]
    if not sections:
        return unreadable_file(doc_id, source, f"no text in this {result.format.upper()} file")
    doc = Document(doc_id, ParsedFile(result.format, sections).text, source, metadata, origin=doc_id, sections=sections)
    checked = _check_text(doc)
    return unreadable_file(doc_id, source, checked.reason) if isinstance(checked, LoadFailure) else checked
