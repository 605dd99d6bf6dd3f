"""What an index run reads, end to end on the embedded defaults: shards of a corpus, repeated and
foreign ids, and files or folders that cannot be read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from citadel.documents import chunk_text
from citadel.registry import Registry
from citadel.settings import Settings
from citadel.testing.corpus import dead_letters_of, index_state, write_corpus
from flows.index_corpus import index_corpus


def expected_chunks(paths: list[Path], settings: Settings) -> int:
    return sum(len(chunk_text(p.read_text(), settings.chunk_size, settings.chunk_overlap)) for p in paths)


async def test_shards_cover_the_corpus_once_and_prune_only_their_own(
    data_dir: Path, tmp_path: Path, collection_name: str
) -> None:
    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, files=10)
    settings = Settings()
    first = await index_corpus(str(corpus), collection=collection_name, shard=0, shards=2)
    second = await index_corpus(str(corpus), collection=collection_name, shard=1, shards=2)
    assert first["added"] + second["added"] == 10 and first["added"] > 0 and second["added"] > 0
    total = expected_chunks(paths, settings)
    assert await index_state(settings, collection_name) == (total, total)

    from citadel.documents import shard_of

    gone = next(p for p in paths if shard_of(str(p), 2) == 1)
    gone.unlink()
    paths.remove(gone)
    other = await index_corpus(str(corpus), collection=collection_name, shard=0, shards=2)
    assert other["deleted"] == 0, "shard 0 never prunes shard 1's files"
    own = await index_corpus(str(corpus), collection=collection_name, shard=1, shards=2)
    assert own["deleted"] == 1
    total = expected_chunks(paths, settings)
    assert await index_state(settings, collection_name) == (total, total)

    with pytest.raises(ValueError, match="both shard and shards"):
        await index_corpus(str(corpus), collection=collection_name, shard=1)


async def test_inline_documents_shard_by_id(data_dir: Path, collection_name: str) -> None:
    docs = [{"id": f"d{i}", "text": f"inline document {i}"} for i in range(8)]
    counts = [
        (await index_corpus(docs, collection=collection_name, source_name="api", shard=s, shards=3))["added"]
        for s in range(3)
    ]
    assert sum(counts) == 8


async def test_a_repeated_document_id_is_dead_lettered_not_left_as_stray_points(
    data_dir: Path, tmp_path: Path, collection_name: str
) -> None:
    """Two records with one id would overwrite each other's points; the second one is refused."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # The first record's own id "1" and the second record's position 1 both make the id F#1.
    (corpus / "items.json").write_text('[{"id": "1", "text": "first record text"}, {"text": "second record text"}]')
    (corpus / "more.jsonl").write_text('{"id": "x", "text": "alpha"}\n{"id": "x", "text": "beta"}\n')
    summary = await index_corpus(str(corpus), collection=collection_name)
    assert (summary["added"], summary["failed"]) == (2, 2)
    assert await index_state(Settings(), collection_name) == (2, 2)
    again = await index_corpus(str(corpus), collection=collection_name)
    assert (again["unchanged"], again["updated"]) == (2, 0), "no flip-flop between the two copies"
    letters = [letter["error"] for letter in await dead_letters_of(Settings(), collection_name)]
    assert len(letters) == 2 and all("already has the id" in e for e in letters)

    (corpus / "items.json").unlink()
    (corpus / "more.jsonl").unlink()
    await index_corpus(str(corpus), collection=collection_name)
    assert await index_state(Settings(), collection_name) == (0, 0), "nothing is left behind"
    assert await dead_letters_of(Settings(), collection_name) == [], "the files' dead letters went with them"


async def test_a_records_file_that_fails_to_load_keeps_its_records(
    data_dir: Path, tmp_path: Path, collection_name: str
) -> None:
    """One bad byte in a .jsonl file must not prune the records it held; they come back unchanged."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    records = corpus / "records.jsonl"
    good = '{"id": "a", "text": "first record"}\n{"id": "b", "text": "second record"}\n'
    records.write_text(good)
    await index_corpus(str(corpus), collection=collection_name)
    records.write_bytes(good.encode() + b"\xff\n")
    broken = await index_corpus(str(corpus), collection=collection_name)
    assert (broken["deleted"], broken["failed"]) == (0, 1)
    assert await index_state(Settings(), collection_name) == (2, 2)
    records.write_text(good)
    repaired = await index_corpus(str(corpus), collection=collection_name)
    assert (repaired["unchanged"], repaired["chunks_embedded"]) == (2, 0)
    assert await dead_letters_of(Settings(), collection_name) == [], "the file reads again: its dead letter is resolved"


async def test_a_folder_that_cannot_be_read_is_not_taken_for_deleted(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreadable folder (permissions, a dropped mount) lists as nothing; its documents must stay."""
    corpus = tmp_path / "corpus"
    write_corpus(corpus / "kept", files=2, seed=4)
    write_corpus(corpus / "top", files=2, seed=5)
    await index_corpus(str(corpus), collection=collection_name)
    before = await index_state(Settings(), collection_name)

    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == corpus / "kept":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    (corpus / "top" / "doc_00000.md").unlink()
    summary = await index_corpus(str(corpus), collection=collection_name)
    assert summary["deleted"] == 0, "nothing is deleted from a listing that missed a folder"
    assert await index_state(Settings(), collection_name) == before

    monkeypatch.setattr(os, "scandir", real_scandir)
    assert (await index_corpus(str(corpus), collection=collection_name))["deleted"] == 1


async def test_an_inline_id_of_another_source_is_refused_not_taken_over(data_dir: Path, collection_name: str) -> None:
    """Two sources sending the same id would replace each other's document and points on every run."""
    await index_corpus([{"id": "1", "text": "a customer record"}], collection=collection_name, source_name="crm")
    other = await index_corpus([{"id": "1", "text": "a wiki page"}, {"id": "2", "text": "another page"}],
                               collection=collection_name, source_name="wiki")
    assert (other["added"], other["failed"]) == (1, 1)
    registry = Registry(Settings().registry_url)
    await registry.init()
    (letter,) = await registry.dead_letters(collection_name)
    stored = await registry.get_documents(collection_name, ["1"])
    await registry.aclose()
    assert "already indexed in this collection from source 'crm'" in letter["error"]
    assert stored["1"].source == "crm"
    again = await index_corpus([{"id": "1", "text": "a customer record"}], collection=collection_name, source_name="crm")
    assert again["unchanged"] == 1, "the first source's document is untouched"


async def test_the_flow_parses_rich_files_in_its_pool_and_dead_letters_a_bad_one(
    data_dir: Path, tmp_path: Path, collection_name: str
) -> None:
    from citadel.documents import close_shared_pool
    from citadel.testing.richfiles import html_page, pdf_bytes

    corpus = tmp_path / "rich"
    corpus.mkdir()
    (corpus / "guide.pdf").write_bytes(pdf_bytes(["Page one of the guide.", "Page two tells of the harbour."], title="Guide"))
    (corpus / "page.html").write_text(html_page([(1, "Tides"), (None, "Spring tides come twice a month.")]))
    (corpus / "notes.md").write_text("Plain notes about tangerines.\n")
    (corpus / "torn.pdf").write_bytes(pdf_bytes(["cut short"])[:200])
    try:
        summary = await index_corpus(str(corpus), collection=collection_name)
    finally:
        close_shared_pool()
    assert (summary["added"], summary["failed"]) == (3, 1), summary
    settings = Settings()
    vectors, chunks = await index_state(settings, collection_name)
    assert vectors == chunks > 0
    (letter,) = await dead_letters_of(settings, collection_name)
    assert letter.document_id.endswith("torn.pdf") and "not a readable PDF" in letter.error
