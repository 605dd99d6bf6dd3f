"""A sandboxed run (source roots given) lists and opens only files whose real path lies inside
its roots, whatever the glob, the symlinks or the '..'; without roots symlinks are followed."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from citadel.documents import (
    LoadFailure,
    SourceListing,
    SourceRoots,
    iter_groups,
    list_source,
    load_file,
    load_group,
    source_name_problem,
    sourceroots,
)
from citadel.errors import ConfigurationError

MAX = 1_000_000
SECRET = "the secret outside the roots"


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A root holding ``link -> outside``, ``evil.txt -> outside/s.txt``, and its own files."""
    outside = tmp_path / "outside"
    (outside / "deeper").mkdir(parents=True)
    (outside / "s.txt").write_text(SECRET)
    (outside / "deeper" / "t.txt").write_text(SECRET)
    root = tmp_path / "sources"
    (root / "team" / "docs").mkdir(parents=True)
    (root / "team" / "a.txt").write_text("inside a")
    (root / "team" / "docs" / "b.md").write_text("inside b")
    (root / "team" / "link").symlink_to(outside)
    (root / "team" / "evil.txt").symlink_to(outside / "s.txt")
    (root / "team" / "alias.txt").symlink_to(root / "team" / "a.txt")  # a link that stays inside is read
    return root, outside


def names(paths: list[Path], root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in paths)


def read_all(listing: SourceListing) -> str:
    texts = []
    for group in iter_groups(listing, None, max_documents=100, max_bytes=MAX):
        texts += [item.text for item in load_group(group, "src", MAX) if not isinstance(item, LoadFailure)]
    return "\n".join(texts)


@pytest.mark.parametrize("pattern", ["team/*/*.txt", "team/**/*.txt", "team/[e]vil.txt", "*/*.txt", "team/*", "**"])
def test_a_glob_never_lists_nor_reads_what_lies_outside(tree: tuple[Path, Path], pattern: str) -> None:
    root, _ = tree
    roots = SourceRoots.of([root])
    listing = list_source(str(root / pattern), roots=roots)
    assert all(roots.holds(p) for p in listing.paths)
    assert SECRET not in read_all(listing)
    assert listing.outside, "what was left out is named"
    assert all(str(root) in entry for entry in listing.outside), "by the name inside the root, not the target"
    assert "s.txt" not in " ".join(listing.outside).replace("evil.txt", "")


def test_the_same_globs_without_roots_follow_symlinks(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    assert SECRET in read_all(list_source(str(root / "team" / "*" / "*.txt")))
    assert SECRET in read_all(list_source(str(root / "team" / "[e]vil.txt")))


def test_the_root_folder_holding_links_lists_only_its_own_files(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    listing = list_source(root, roots=SourceRoots.of([root]))
    assert names(listing.paths, root) == ["team/a.txt", "team/alias.txt", "team/docs/b.md"]
    assert listing.complete
    assert sorted(listing.outside) == [str(root / "team" / "evil.txt"), str(root / "team" / "link")]
    assert SECRET not in read_all(listing)
    assert SECRET in read_all(list_source(root))  # the CLI follows a symlinked file, as documented


def test_a_path_that_resolves_outside_is_refused_without_saying_what_is_there(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    roots = SourceRoots.of([root])
    for source in (root / "team" / "link", root / "team" / "evil.txt", root / "team" / ".." / ".." / "outside",
                   root / "team" / "link" / "s.txt", root / "team" / "link" / "missing.txt", outside):
        with pytest.raises(ConfigurationError, match="leads outside the folders") as caught:
            list_source(source, roots=roots)
        assert "s.txt" not in str(caught.value).replace(str(source), "")


def test_dot_dot_inside_a_glob_does_not_climb_out(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    listing = list_source(str(root / "team" / ".." / ".." / "outside" / "*.txt"), roots=SourceRoots.of([root]))
    assert listing.paths == [] and listing.outside
    inside = list_source(str(root / "team" / "docs" / ".." / "*.txt"), roots=SourceRoots.of([root]))
    assert sorted(p.name for p in inside.paths) == ["a.txt", "alias.txt"]


def test_a_symlink_loop_inside_the_roots_ends(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    (root / "team" / "docs" / "loop").symlink_to(root / "team")
    listing = list_source(str(root / "**" / "*.md"), roots=SourceRoots.of([root]))
    assert "team/docs/b.md" in names(listing.paths, root)


def test_a_root_that_is_itself_a_symlink_is_resolved(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = tree
    (tmp_path / "root-link").symlink_to(root)
    listing = list_source(tmp_path / "root-link" / "team", roots=SourceRoots.of([tmp_path / "root-link"]))
    assert names(listing.paths, root) == ["team/a.txt", "team/alias.txt", "team/docs/b.md"]


@pytest.mark.parametrize("pattern", ["*.txt", "**/*.txt", "**", "*/*", "sub/[a-c]*.md", "**/.hidden/*.txt", "*/deep/*.py"])
def test_without_links_a_sandboxed_glob_finds_what_glob_finds(tmp_path: Path, pattern: str) -> None:
    root = tmp_path / "plain"
    for rel in ("a.txt", "b.md", "sub/a.md", "sub/c.md", "sub/d.md", "sub/deep/x.py", "sub/.hidden/h.txt", "z/y.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    expected = sorted(Path(p) for p in glob.glob(str(root / pattern), recursive=True) if Path(p).is_file())
    assert list_source(str(root / pattern), roots=SourceRoots.of([root])).paths == expected


def test_a_file_swapped_for_a_symlink_after_listing_is_not_read(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    target = root / "team" / "docs" / "b.md"
    listing = list_source(root / "team" / "docs", roots=SourceRoots.of([root]))
    assert listing.paths == [target]
    target.unlink()
    target.symlink_to(outside / "s.txt")
    (failure,) = read_failures(listing)
    assert "leads outside the folders" in failure.reason and failure.id == str(target)


def test_a_symlink_swapped_in_after_the_check_is_not_followed(tree: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The race inside the open: the path was checked, then became a symlink (last part, or a folder on the way)."""
    root, outside = tree
    roots = SourceRoots.of([root])
    checked = root / "team" / "docs" / "b.md"
    checked.unlink()
    checked.symlink_to(outside / "s.txt")
    folder = root / "team" / "swapped"
    folder.symlink_to(outside)
    monkeypatch.setattr(sourceroots.os.path, "realpath", lambda path, **_: os.path.abspath(path))  # the check saw them before
    for path in (checked, folder / "s.txt"):
        (failure,) = load_file(path, "src", MAX, roots)
        assert isinstance(failure, LoadFailure) and "leads outside the folders" in failure.reason, failure


def test_a_fifo_inside_the_roots_is_not_opened_for_long(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    fifo = root / "team" / "pipe.txt"
    os.mkfifo(fifo)
    (failure,) = load_file(fifo, "src", MAX, SourceRoots.of([root]))
    assert isinstance(failure, LoadFailure) and "not a regular file" in failure.reason


def test_files_inside_are_read_within_the_size_limit(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    roots = SourceRoots.of([root])
    (doc,) = load_file(root / "team" / "alias.txt", "src", MAX, roots)
    assert not isinstance(doc, LoadFailure) and doc.text == "inside a"
    (failure,) = load_file(root / "team" / "a.txt", "src", 3, roots)
    assert isinstance(failure, LoadFailure) and "over the limit of 3" in failure.reason


def read_failures(listing: SourceListing) -> list[LoadFailure]:
    out: list[LoadFailure] = []
    for group in iter_groups(listing, None, max_documents=100, max_bytes=MAX):
        out += [item for item in load_group(group, "src", MAX) if isinstance(item, LoadFailure)]
    return out


def test_inline_names_may_not_name_a_path_outside_the_roots(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    roots = SourceRoots.of([root])
    for allowed in ("inline", "crm", "inline:team-a", str(root / "team")):
        assert source_name_problem(allowed, roots) is None, allowed
    for refused in (str(outside), str(root / "team" / "link"), str(root / ".." / "outside"), "team/a", "..\\teamB", str(root.parent)):
        assert "outside the folders" in (source_name_problem(refused, roots) or ""), refused
    assert source_name_problem("crm", SourceRoots.of([])) is None
    assert source_name_problem(str(root), SourceRoots.of([])) is not None


def test_a_sandboxed_run_refuses_inline_records_under_another_sources_name(tree: tuple[Path, Path]) -> None:
    """The run's own guard, behind the API's refusal: a prune only ever reaches the run's own source."""
    from citadel.indexing import resolve_source

    root, outside = tree
    roots = SourceRoots.of([root])
    records = [{"id": "planted", "text": "x"}]
    with pytest.raises(ConfigurationError, match="outside the folders"):
        resolve_source(records, prune=True, source_name=str(outside), roots=roots)
    assert resolve_source(records, prune=True, source_name=str(outside)).key == str(outside)  # the CLI's choice
    assert resolve_source(records, prune=True, source_name="team-notes", roots=roots).key == "team-notes"
    assert resolve_source(str(root / "team" / "*.txt"), roots=roots).listing.roots == roots  # carried to the open
