"""Indexing an s3:// source against a real S3 server (moto's server mode on loopback): a first
index, an unchanged run that fetches nothing (the server's request log says so), edits and
deletes, a dead letter, an object written again unchanged, and the sandbox's allowlist."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from citadel.documents import SourceRoots, close_shared_pool, list_source
from citadel.errors import ConfigurationError
from citadel.indexing import index_source
from citadel.resources import Resources
from citadel.search import search_with
from citadel.settings import Settings
from citadel.testing.corpus import index_state
from citadel.testing.richfiles import html_page, pdf_bytes
from citadel.testing.s3server import S3Server
from tests.support.s3 import BUCKET

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("aws_environment")]


@pytest.fixture
def s3_settings(data_dir: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CITADEL_S3_ENDPOINT_URL", s3_server.url)
    return Settings()


@pytest.fixture(scope="module", autouse=True)
def _parsers_closed():
    yield
    close_shared_pool()


def handbook() -> dict[str, bytes]:
    """Five notes, three records in one JSONL object, a web page, a PDF, and a torn PDF."""
    objects = {f"notes/note-{number}.md": f"# Note {number}\n\nThe harbour note number {number} about tides.".encode()
               for number in range(5)}
    objects["records.jsonl"] = "\n".join(
        json.dumps({"id": f"r{number}", "text": f"Record {number} of the lighthouse log."}) for number in range(3)
    ).encode()
    objects["tides.html"] = html_page([(1, "Tide tables"), (None, "Spring tides come twice a month.")], title="Tides").encode()
    objects["manual.pdf"] = pdf_bytes(["The keeper trims the quartz lamp."], title="Keeper's Manual")
    objects["torn.pdf"] = pdf_bytes(["a page that was cut"])[:300]
    return objects


async def _put(server: S3Server, prefix: str, objects: dict[str, bytes]) -> None:
    await server.put_objects(BUCKET, {prefix + key: data for key, data in objects.items()})


def _fetched(server: S3Server, since: int) -> list[str]:
    return sorted(request.key.rsplit("/", 1)[-1] for request in server.object_gets(since))


async def test_an_s3_prefix_is_indexed_incrementally_without_fetching_what_did_not_change(
    s3_server: S3Server, s3_settings: Settings, collection_name: str, registry_backend: str
) -> None:
    prefix = f"handbook-{uuid.uuid4().hex[:8]}/"
    uri = f"s3://{BUCKET}/{prefix}"
    await _put(s3_server, prefix, handbook())
    resources = Resources(s3_settings)
    try:
        first = await index_source(resources, uri, collection_name)
        assert (first.added, first.failed, first.source) == (10, 1, uri), first
        assert await index_state(s3_settings, collection_name) == (first.chunks_embedded,) * 2
        registry = await resources.registry()
        letters = {letter.document_id: letter.error for letter in await registry.dead_letters(collection_name)}
        assert list(letters) == [f"{uri}torn.pdf"] and "not a readable PDF" in letters[f"{uri}torn.pdf"]
        hits = (await search_with(resources, "keeper trims the quartz lamp", collection_name, limit=3)).hits
        assert (hits[0].uri, hits[0].title, hits[0].page) == (f"{uri}manual.pdf", "Keeper's Manual", 1)

        mark = s3_server.mark()
        again = await index_source(resources, uri, collection_name)
        assert (again.added, again.updated, again.unchanged, again.deleted, again.chunks_embedded) == (0, 0, 10, 0, 0), again
        assert _fetched(s3_server, mark) == ["torn.pdf"], "an unchanged object is not fetched; a dead letter is read again"

        await _put(s3_server, prefix, {"notes/note-0.md": b"# Note 0\n\nThe harbour note, rewritten.", "new.md": b"A new note."})
        s3_server.delete_object(BUCKET, prefix + "notes/note-1.md")
        mark = s3_server.mark()
        edited = await index_source(resources, uri, collection_name)
        assert (edited.added, edited.updated, edited.deleted, edited.unchanged) == (1, 1, 1, 8), edited
        assert _fetched(s3_server, mark) == ["new.md", "note-0.md", "torn.pdf"]
        assert await index_state(s3_settings, collection_name) == (await registry.count_chunks(collection_name),) * 2
        ids = {doc_id for doc_id, _ in [pair for page in [p async for p in registry.iter_documents(collection_name, uri)]
                                         for pair in page]}
        assert f"{uri}notes/note-1.md" not in ids and f"{uri}records.jsonl#r0" in ids and f"{uri}new.md" in ids
    finally:
        await resources.aclose()


async def test_an_object_written_again_unchanged_is_read_once_then_skipped(
    s3_server: S3Server, s3_settings: Settings, collection_name: str
) -> None:
    """Same text, another ETag (a multipart upload, a copy): unchanged, and its new fingerprint is kept."""
    prefix = f"rewritten-{uuid.uuid4().hex[:8]}/"
    uri = f"s3://{BUCKET}/{prefix}"
    await _put(s3_server, prefix, {"a.md": b"The same words.", "b.md": b"Other words."})
    resources = Resources(s3_settings)
    try:
        await index_source(resources, uri, collection_name)
        await _put(s3_server, prefix, {"a.md": b"The same words.\n"})  # a trailing newline: another ETag, the same text
        registry = await resources.registry()
        before = (await registry.get_documents(collection_name, [f"{uri}a.md"]))[f"{uri}a.md"]
        mark = s3_server.mark()
        read = await index_source(resources, uri, collection_name)
        assert _fetched(s3_server, mark) == ["a.md"]
        after = (await registry.get_documents(collection_name, [f"{uri}a.md"]))[f"{uri}a.md"]
        assert after.fingerprint != before.fingerprint and read.chunks_embedded <= 1
        mark = s3_server.mark()
        await index_source(resources, uri, collection_name)
        assert _fetched(s3_server, mark) == []
    finally:
        await resources.aclose()


async def test_a_sandboxed_run_lists_only_the_allowed_buckets_and_prefixes(
    s3_server: S3Server, s3_settings: Settings
) -> None:
    prefix = f"allowed-{uuid.uuid4().hex[:8]}/"
    await _put(s3_server, prefix, {"a.md": b"Allowed."})
    roots = SourceRoots.of([f"s3://{BUCKET}/{prefix}"])
    listing = await asyncio.to_thread(list_source, f"s3://{BUCKET}/{prefix}", (), roots, s3_settings)
    assert [entry.key for entry in listing.objects] == [f"{prefix}a.md"]
    mark = s3_server.mark()
    for outside in (f"s3://{BUCKET}/", f"s3://{BUCKET}/other/", f"s3://other-bucket/{prefix}"):
        with pytest.raises(ConfigurationError, match="CITADEL_API_SOURCE_BUCKETS"):
            list_source(outside, (), roots, s3_settings)
    with pytest.raises(ConfigurationError, match="CITADEL_API_SOURCE_BUCKETS"):
        list_source(f"s3://{BUCKET}/{prefix}", (), SourceRoots.of(["/srv/docs"]), s3_settings)
    assert s3_server.requests(mark) == [], "refused before any request"
