"""Reading a group of objects from object storage: fetched side by side (a group's bytes are
bounded by the batch limits), then decoded or parsed as files are, each document carrying the
fingerprint ("ETag:size") of what was actually read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from citadel.documents.loading import Document, LoadFailure, ToParse, decode_documents, parse_items, unreadable_file
from citadel.documents.objectstore import FetchedObject, ObjectEntry, S3Source
from citadel.documents.suffixes import is_rich_suffix

if TYPE_CHECKING:
    from citadel.documents.isolation import ParserPool

FETCH_THREADS = 8  # requests in flight per group: object stores answer each in tens of milliseconds


def load_objects(
    entries: Sequence[ObjectEntry], store: S3Source, source: str, max_bytes: int, parsers: Callable[[], ParserPool] | None = None
) -> list[Document | LoadFailure]:
    """The documents of ``entries``, in their order: an object that cannot be fetched (gone since
    the listing, refused, over ``max_bytes``) or read is a failure with its reason."""
    if not entries:
        return []
    with ThreadPoolExecutor(min(FETCH_THREADS, len(entries)), thread_name_prefix="citadel-fetch") as pool:
        fetched = list(pool.map(lambda entry: _fetch(store, entry, max_bytes), entries))
    out: dict[str, list[Document | LoadFailure]] = {}
    to_parse: list[ToParse] = []
    fingerprints: dict[str, str] = {}
    for entry, got in zip(entries, fetched, strict=True):
        if isinstance(got, str):
            out[entry.uri] = [unreadable_file(entry.uri, source, got)]
            continue
        suffix = PurePosixPath(entry.key).suffix.lower()
        metadata: dict[str, Any] = {"uri": entry.uri, "key": entry.key, "extension": suffix}
        fingerprints[entry.uri] = f"{got.etag or ''}:{len(got.data)}"
        if is_rich_suffix(suffix):
            to_parse.append(ToParse(entry.uri, suffix, metadata, _bytes_of(got)))
        else:
            out[entry.uri] = decode_documents(entry.uri, suffix, got.data, source, metadata)
    if to_parse:
        from citadel.documents.isolation import shared_pool

        parsed = parse_items(to_parse, source, parsers() if parsers is not None else shared_pool())
        out.update((uri, [item]) for uri, item in parsed.items())
    items = [item for entry in entries for item in out[entry.uri]]
    for item in items:
        if isinstance(item, Document):
            item.fingerprint = fingerprints[item.origin]
    return items


def _fetch(store: S3Source, entry: ObjectEntry, max_bytes: int) -> FetchedObject | str:
    try:
        return store.fetch(entry.key, max_bytes, listed_size=entry.size)
    except (OSError, ValueError) as exc:
        return f"{entry.uri}: {exc}" if entry.uri not in str(exc) else str(exc)


def _bytes_of(fetched: FetchedObject) -> Callable[[], bytes]:
    return lambda: fetched.data
