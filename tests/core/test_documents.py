"""Reading a corpus: listing sources, loading every file type, and turning bad files into failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citadel.documents import (
    SUPPORTED_SUFFIXES,
    Document,
    LoadFailure,
    documents_from_records,
    iter_groups,
    list_source,
    load_file,
    load_group,
)
from citadel.errors import ConfigurationError

MAX = 1_000_000


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A directory with supported files, unsupported ones and a hidden folder."""
    root = tmp_path / "corpus"
    write(root / "b.txt", "bee")
    write(root / "a.md", "# a")
    write(root / "sub" / "deep" / "c.py", "print('c')")
    write(root / "sub" / "d.JSON", '{"text": "d"}')
    write(root / "sub" / "e.jsonl", '{"text": "e"}\n')
    write(root / "f.rst", "eff")
    write(root / "image.png", b"\x89PNG")
    write(root / "notes.odt", "no")
    write(root / ".git" / "config.txt", "hidden")
    write(root / "sub" / ".cache" / "x.md", "hidden")
    return root


# list_source -------------------------------------------------------------------------------
def test_list_directory_recursive_supported_sorted(corpus: Path) -> None:
    """A directory lists its supported files recursively, sorted, skipping hidden folders."""
    listing = list_source(corpus)
    assert listing.key == str(corpus.resolve())
    assert listing.complete is True
    rel = [p.relative_to(corpus.resolve()).as_posix() for p in listing.paths]
    assert rel == ["a.md", "b.txt", "f.rst", "sub/d.JSON", "sub/deep/c.py", "sub/e.jsonl"]
    assert listing.paths == sorted(listing.paths)
    assert all(p.is_absolute() for p in listing.paths)


def test_list_directory_with_hidden_parent_still_lists(tmp_path: Path) -> None:
    """Only folders hidden inside the source are skipped, not a hidden folder holding the source."""
    root = tmp_path / ".hidden-root" / "docs"
    write(root / "a.txt", "a")
    assert [p.name for p in list_source(root).paths] == ["a.txt"]


def test_list_glob(corpus: Path) -> None:
    """A glob lists the matching supported files, sorted, keyed by the absolute pattern."""
    listing = list_source(str(corpus / "**" / "*.*"))
    names = [p.name for p in listing.paths]
    assert set(names) == {"a.md", "b.txt", "f.rst", "d.JSON", "c.py", "e.jsonl"}
    assert listing.key == str(corpus / "**" / "*.*")
    assert listing.paths == sorted(listing.paths)
    only_txt = list_source(str(corpus / "*.txt"))
    assert [p.name for p in only_txt.paths] == ["b.txt"]


def test_list_relative_glob_resolves_against_cwd(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative glob is anchored at the current directory."""
    monkeypatch.chdir(corpus)
    listing = list_source("*.md")
    assert listing.paths == [Path.cwd() / "a.md"]
    assert listing.key == str(Path.cwd() / "*.md")


def test_list_glob_matching_nothing_is_empty(tmp_path: Path) -> None:
    """A glob without matches is an empty (complete) listing, not an error."""
    listing = list_source(str(tmp_path / "*.txt"))
    assert listing.paths == [] and listing.complete


def test_list_single_file(corpus: Path) -> None:
    """A single supported file lists just itself."""
    listing = list_source(corpus / "b.txt")
    assert listing.paths == [(corpus / "b.txt").resolve()]
    assert listing.key == str((corpus / "b.txt").resolve())


def test_list_unsupported_single_file(corpus: Path) -> None:
    """A single file of an unsupported type is refused with the supported list."""
    with pytest.raises(ConfigurationError, match="not a supported document"):
        list_source(corpus / "image.png")


def test_list_missing_path(tmp_path: Path) -> None:
    """A path that does not exist is a configuration error naming it."""
    missing = tmp_path / "nope"
    with pytest.raises(ConfigurationError, match="does not exist"):
        list_source(missing)


def test_supported_suffixes() -> None:
    """The documented file types are the supported ones."""
    assert set(SUPPORTED_SUFFIXES) == {
        ".txt", ".md", ".rst", ".json", ".jsonl", ".py",  # plain text and records
        ".pdf", ".html", ".htm", ".xhtml", ".docx", ".pptx", ".xlsx", ".epub",  # parsed (docs/documents.md)
    }


# load_file ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["notes.txt", "readme.md", "script.py", "guide.rst"])
def test_load_text_files(tmp_path: Path, name: str) -> None:
    """Text files become one document with the path as id and path/extension metadata."""
    path = write(tmp_path / name, "héllo\nwörld\n")
    (doc,) = load_file(path, "src", MAX)
    assert isinstance(doc, Document)
    assert (doc.id, doc.text, doc.source) == (str(path), "héllo\nwörld\n", "src")
    assert doc.metadata == {"path": str(path), "extension": path.suffix}


def test_a_markdown_files_first_heading_is_its_title(tmp_path: Path) -> None:
    titled = write(tmp_path / "guide.md", "Intro line\n\n# Citadel's guide ##\n\n## Install\n\ntext\n")
    untitled = write(tmp_path / "notes.md", "## Only a subsection\n\n#hashtag, not a heading\n")
    plain = write(tmp_path / "notes.txt", "# Not markdown\n")
    assert load_file(titled, "src", MAX)[0].metadata["title"] == "Citadel's guide"
    assert "title" not in load_file(untitled, "src", MAX)[0].metadata
    assert "title" not in load_file(plain, "src", MAX)[0].metadata


def test_load_json_object(tmp_path: Path) -> None:
    """A JSON object gives one document with its text and metadata merged over the file metadata."""
    path = write(tmp_path / "doc.json", json.dumps({"text": "body", "metadata": {"author": "ann", "extension": "x"}}))
    (doc,) = load_file(path, "src", MAX)
    assert isinstance(doc, Document)
    assert doc.id == str(path)
    assert doc.text == "body"
    assert doc.metadata == {"path": str(path), "extension": "x", "author": "ann"}


def test_load_json_list(tmp_path: Path) -> None:
    """A JSON list gives one document per item, ids prefixed by the file (own id or position)."""
    items = [{"text": "zero"}, {"id": "custom", "text": "one", "metadata": {"k": 1}}, {"nope": 1}, "string"]
    path = write(tmp_path / "docs.json", json.dumps(items))
    out = load_file(path, "src", MAX)
    assert [type(o) for o in out] == [Document, Document, LoadFailure, LoadFailure]
    assert out[0].id == f"{path}#0" and out[0].text == "zero"
    assert out[1].id == f"{path}#custom" and out[1].metadata["k"] == 1
    assert out[2].id == f"{path}#2" and "missing a string 'text' field" in out[2].reason
    assert out[3].id == f"{path}#3" and "expected an object" in out[3].reason


def test_load_jsonl_per_line_with_ids(tmp_path: Path) -> None:
    """Each JSONL line is a document; blank lines are skipped; ids keep the file as prefix."""
    lines = [json.dumps({"id": "a", "text": "first"}), "", json.dumps({"text": "third", "metadata": {"n": 3}})]
    path = write(tmp_path / "docs.jsonl", "\n".join(lines) + "\n")
    out = load_file(path, "src", MAX)
    assert all(isinstance(o, Document) for o in out)
    assert [o.id for o in out] == [f"{path}#a", f"{path}#3"]
    assert [o.text for o in out] == ["first", "third"]
    assert out[1].metadata == {"path": str(path), "extension": ".jsonl", "n": 3}


def test_bad_jsonl_line_fails_alone(tmp_path: Path) -> None:
    """A malformed line becomes a LoadFailure naming its line; the other lines still load."""
    path = write(tmp_path / "docs.jsonl", '{"text": "ok 1"}\n{not json\n{"text": "ok 3"}\n[1, 2]\n')
    out = load_file(path, "src", MAX)
    assert [type(o) for o in out] == [Document, LoadFailure, Document, LoadFailure]
    assert out[1].id == f"{path}#2"
    assert out[1].reason.startswith("line 2:")
    assert out[1].stage == "load"
    assert out[3].reason.startswith("line 4:") and "expected an object" in out[3].reason
    assert [o.text for o in out if isinstance(o, Document)] == ["ok 1", "ok 3"]


def test_invalid_json_file(tmp_path: Path) -> None:
    """A .json file that does not parse is one failure saying so."""
    path = write(tmp_path / "bad.json", "{oops")
    (failure,) = load_file(path, "src", MAX)
    assert isinstance(failure, LoadFailure)
    assert failure.reason.startswith("invalid JSON")


@pytest.mark.parametrize(("name", "content"), [("empty.txt", ""), ("blank.md", " \n\t\n  "), ("empty.jsonl", "\n\n"), ("empty.json", "[]")])
def test_empty_documents_fail(tmp_path: Path, name: str, content: str) -> None:
    """Files with nothing to index are failures with an 'empty document' reason."""
    path = write(tmp_path / name, content)
    (failure,) = load_file(path, "src", MAX)
    assert isinstance(failure, LoadFailure)
    assert failure.id == str(path)
    assert "empty document" in failure.reason


def test_whitespace_only_record_fails(tmp_path: Path) -> None:
    """A JSON record with only whitespace text is an empty document too."""
    path = write(tmp_path / "r.json", json.dumps({"text": "   "}))
    (failure,) = load_file(path, "src", MAX)
    assert isinstance(failure, LoadFailure) and "empty document" in failure.reason


def test_binary_file_fails(tmp_path: Path) -> None:
    """Content with NUL bytes is refused as binary."""
    path = write(tmp_path / "blob.txt", b"text\x00\x01\x02more")
    (failure,) = load_file(path, "src", MAX)
    assert isinstance(failure, LoadFailure)
    assert "binary file" in failure.reason


def test_invalid_utf8_fails(tmp_path: Path) -> None:
    """Non-UTF-8 bytes are refused with the offending offset."""
    path = write(tmp_path / "latin.txt", b"caf" + b"\xe9 au lait")
    (failure,) = load_file(path, "src", MAX)
    assert isinstance(failure, LoadFailure)
    assert failure.reason == "not valid UTF-8 at byte 3; convert the file to UTF-8"


def test_over_max_bytes_fails(tmp_path: Path) -> None:
    """A file over the size limit is refused without being read, naming both sizes."""
    path = write(tmp_path / "big.txt", "x" * 101)
    (failure,) = load_file(path, "src", 100)
    assert isinstance(failure, LoadFailure)
    assert failure.reason == "file is 101 bytes, over the limit of 100 (CITADEL_MAX_FILE_BYTES)"
    (doc,) = load_file(path, "src", 101)
    assert isinstance(doc, Document)


def test_unreadable_path_fails(tmp_path: Path) -> None:
    """A file that vanished between listing and loading is a failure, not a crash."""
    (failure,) = load_file(tmp_path / "gone.txt", "src", MAX)
    assert isinstance(failure, LoadFailure)
    assert failure.id == str(tmp_path / "gone.txt")


def test_groups_of_a_listing_load_every_file(corpus: Path) -> None:
    """Loading the groups of a listing loads every listed file with the listing key as source."""
    listing = list_source(corpus)
    groups = list(iter_groups(listing, None, max_documents=100, max_bytes=MAX))
    assert len(groups) == 1 and (groups[0].done, groups[0].total) == (len(listing.paths), len(listing.paths))
    docs = load_group(groups[0], listing.key, MAX)
    assert len(docs) == 6
    assert all(isinstance(d, Document) and d.source == listing.key for d in docs)
    assert {d.text for d in docs} >= {"bee", "# a", "d", "e"}


# records, hashes, batching -----------------------------------------------------------------
def test_documents_from_records() -> None:
    """Inline records become documents; bad ones become failures with the best id available."""
    records = [
        {"id": "one", "text": "first", "metadata": {"a": 1}},
        {"id": "two", "text": "  "},
        {"text": "no id"},
        {"id": "three"},
        "not a dict",
        {"id": "four", "text": "x", "metadata": ["bad"]},
    ]
    out = list(documents_from_records(records, "api"))
    assert isinstance(out[0], Document)
    assert (out[0].id, out[0].text, out[0].source, out[0].metadata) == ("one", "first", "api", {"a": 1})
    assert isinstance(out[1], LoadFailure) and out[1].id == "two" and "empty document" in out[1].reason
    assert isinstance(out[2], LoadFailure) and out[2].id == "api#2" and "missing an 'id'" in out[2].reason
    assert isinstance(out[3], LoadFailure) and out[3].id == "three" and "'text'" in out[3].reason
    assert isinstance(out[4], LoadFailure) and out[4].id == "api#4" and "expected an object" in out[4].reason
    assert isinstance(out[5], LoadFailure) and out[5].id == "four" and "'metadata' must be an object" in out[5].reason


def test_content_hash_changes_with_text_or_metadata() -> None:
    """The content hash follows the text and the metadata, but not metadata key order or the id."""
    base = Document("id", "text", "src", {"a": 1, "b": 2})
    assert base.content_hash == Document("other-id", "text", "other-src", {"b": 2, "a": 1}).content_hash
    assert base.content_hash != Document("id", "text!", "src", {"a": 1, "b": 2}).content_hash
    assert base.content_hash != Document("id", "text", "src", {"a": 1, "b": 3}).content_hash
    assert base.content_hash != Document("id", "text", "src", {}).content_hash
    assert len(base.content_hash) == 64


def test_groups_are_bounded_by_count_and_bytes(tmp_path: Path) -> None:
    """Groups close at the file limit or the byte limit, with progress in files."""
    for n in range(7):
        write(tmp_path / f"{n}.txt", "x" * (10 if n != 3 else 500))
    listing = list_source(tmp_path)
    by_count = list(iter_groups(listing, None, max_documents=3, max_bytes=10_000))
    assert [len(g.paths) for g in by_count] == [3, 3, 1]
    assert [g.done for g in by_count] == [3, 6, 7] and all(g.total == 7 for g in by_count)
    by_size = list(iter_groups(listing, None, max_documents=100, max_bytes=100))
    assert [len(g.paths) for g in by_size] == [4, 3]  # the 500-byte file closes the first group
    assert sum(len(load_group(g, listing.key, MAX)) for g in by_size) == 7


def test_groups_of_inline_records() -> None:
    """Inline records group by count, numbered across groups; an empty list yields one empty group."""
    records = [{"id": str(i), "text": f"t{i}"} for i in range(5)] + [{"text": "no id"}]
    groups = list(iter_groups(None, records, max_documents=2, max_bytes=10))
    assert [[d.id for d in load_group(g, "api", MAX)] for g in groups] == [["0", "1"], ["2", "3"], ["4", "api#5"]]
    assert [(g.done, g.total) for g in groups] == [(2, 6), (4, 6), (6, 6)]
    (empty,) = iter_groups(None, [], max_documents=2, max_bytes=10)
    assert (empty.records, empty.done, empty.total) == ([], 0, 0)


def test_undecodable_file_name_and_lone_surrogates_are_failures(tmp_path: Path) -> None:
    """A file name that is not UTF-8, or text with a lone surrogate, fails alone with a printable id."""
    import os

    bad_name = tmp_path / os.fsdecode(b"bad\xff.txt")
    bad_name.write_text("fine text")
    (failure,) = load_file(bad_name, "src", MAX)
    assert isinstance(failure, LoadFailure) and "not valid UTF-8" in failure.reason
    failure.id.encode("utf-8")  # storable in any database

    records = tmp_path / "r.jsonl"
    records.write_text('{"id": "ok", "text": "fine"}\n{"id": "lone", "text": "\\ud800 broken"}\n')
    ok, broken = load_file(records, "src", MAX)
    assert isinstance(ok, Document)
    assert isinstance(broken, LoadFailure) and "surrogate" in broken.reason


def test_deeply_nested_json_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    deep = "[" * 200_000 + "]" * 200_000
    (tmp_path / "deep.jsonl").write_text('{"id": "ok", "text": "fine"}\n' + deep + "\n")
    (tmp_path / "deep.json").write_text(deep)
    lines = load_file(tmp_path / "deep.jsonl", "s", 10**7)
    assert [type(x).__name__ for x in lines] == ["Document", "LoadFailure"]
    assert "nested too deeply" in lines[1].reason
    (whole,) = load_file(tmp_path / "deep.json", "s", 10**7)
    assert isinstance(whole, LoadFailure) and "nested too deeply" in whole.reason
    assert whole.origin == str(tmp_path / "deep.json"), "a whole-file failure names its file"


def test_a_record_whose_metadata_nests_past_the_bound_is_a_failure_of_its_own(tmp_path: Path) -> None:
    """Metadata is stored as JSON (orjson stops at 254 levels): one such record must not fail the run."""
    def nested(levels: int) -> dict:
        value: dict = {}
        for _ in range(levels - 1):
            value = {"k": value}
        return value

    lines = [{"id": "ok", "text": "fine", "metadata": nested(64)}, {"id": "deep", "text": "deep", "metadata": nested(500)}]
    (tmp_path / "meta.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    ok, deep = load_file(tmp_path / "meta.jsonl", "s", 10**7)
    assert isinstance(ok, Document)
    assert isinstance(deep, LoadFailure) and "'metadata' nests deeper than 64 levels" in deep.reason
    inline = list(documents_from_records(lines, "inline"))
    assert [type(x).__name__ for x in inline] == ["Document", "LoadFailure"]


def test_ids_the_registry_cannot_hold_are_failures(tmp_path: Path) -> None:
    (tmp_path / "ids.jsonl").write_text(
        json.dumps({"id": "x" * 2000, "text": "long id"}) + "\n" + json.dumps({"id": "nul\u0000id", "text": "nul"}) + "\n"
    )
    long_id, nul_id = load_file(tmp_path / "ids.jsonl", "s", 10**7)
    assert isinstance(long_id, LoadFailure) and "over 1024" in long_id.reason and len(long_id.id) <= 1024
    assert isinstance(nul_id, LoadFailure) and "NUL" in nul_id.reason and "\x00" not in nul_id.id


def test_a_symlink_loop_or_a_broken_link_says_what_it_is(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigurationError, match="is a symlink loop"):
        list_source(str(tmp_path / "a"))
    with pytest.raises(ConfigurationError, match="is a symlink to .*nowhere.*which does not exist"):
        list_source(str(tmp_path / "broken"))


def test_excluded_folders_are_left_out_of_folders_and_globs(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "kept.md").write_text("kept")
    (tmp_path / "data" / "qdrant").mkdir(parents=True)
    (tmp_path / "data" / "qdrant" / "meta.json").write_text("{}")
    listed = list_source(str(tmp_path), [tmp_path / "data"])
    assert [p.name for p in listed.paths] == ["kept.md"] and listed.complete
    globbed = list_source(str(tmp_path / "**" / "*.*"), [str(tmp_path / "data")])
    assert [p.name for p in globbed.paths] == ["kept.md"]
    assert {p.name for p in list_source(str(tmp_path)).paths} == {"kept.md", "meta.json"}
