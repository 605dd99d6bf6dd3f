"""Chunking properties: exact, covering, bounded, advancing and deterministic slices."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.documents import Chunk, ParsedFile, Section, chunk_sections, chunk_text
from citadel.hashing import sha256_text

# Text rich in the boundaries the chunker looks for, mixed with arbitrary unicode.
_boundary_text = st.text(alphabet=st.sampled_from(list("abc xyz.!?;:\"')\n\t")), max_size=400)
_texts = st.one_of(_boundary_text, st.text(max_size=300))


@st.composite
def _text_size_overlap(draw: st.DrawFn) -> tuple[str, int, int]:
    text = draw(_texts)
    size = draw(st.integers(min_value=1, max_value=80))
    overlap = draw(st.integers(min_value=0, max_value=size - 1))
    return text, size, overlap


@settings(max_examples=300, deadline=None)
@given(_text_size_overlap())
def test_chunks_are_exact_bounded_covering_and_advancing(case: tuple[str, int, int]) -> None:
    """Every structural guarantee of chunk_text holds for arbitrary text, size and overlap."""
    text, size, overlap = case
    chunks = chunk_text(text, size, overlap)
    if not text:
        assert chunks == []
        return
    assert chunks, "non-empty text must give at least one chunk"
    assert chunks[0].start == 0
    assert chunks[-1].end == len(text)
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert chunk.text == text[chunk.start : chunk.end]
        assert 0 < len(chunk.text) <= size
        assert chunk.hash == sha256_text(chunk.text)
    for prev, nxt in pairwise(chunks):
        assert nxt.start <= prev.end, "consecutive chunks must touch or overlap"
        assert nxt.start > prev.start, "chunks must strictly advance"
    covered = [False] * len(text)
    for chunk in chunks:
        for offset in range(chunk.start, chunk.end):
            covered[offset] = True
    assert all(covered), "every character of the text is in some chunk"


@settings(max_examples=150, deadline=None)
@given(_texts, st.integers(min_value=2, max_value=80), st.data())
def test_ends_advance_when_overlap_below_half_size(text: str, size: int, data: st.DataObject) -> None:
    """With overlap under half the size no chunk ends where (or before) the previous one did."""
    overlap = data.draw(st.integers(min_value=0, max_value=max(0, size // 2 - 1)))
    chunks = chunk_text(text, size, overlap)
    for prev, nxt in pairwise(chunks):
        assert nxt.end > prev.end


@settings(max_examples=100, deadline=None)
@given(_text_size_overlap())
def test_chunking_is_deterministic(case: tuple[str, int, int]) -> None:
    """The same input always gives the same chunks (point ids depend on it)."""
    text, size, overlap = case
    assert chunk_text(text, size, overlap) == chunk_text(text, size, overlap)


@settings(max_examples=100, deadline=None)
@given(_boundary_text, st.integers(min_value=1, max_value=80))
def test_zero_overlap_chunks_tile_the_text(text: str, size: int) -> None:
    """Without overlap the chunks are disjoint and concatenate back to the text."""
    chunks = chunk_text(text, size, 0)
    assert "".join(c.text for c in chunks) == text
    for prev, nxt in pairwise(chunks):
        assert nxt.start == prev.end


def test_text_shorter_than_size_is_one_chunk() -> None:
    """A short text is kept whole."""
    assert chunk_text("hello world", size=100, overlap=10) == [Chunk(0, "hello world", 0, 11)]


def test_paragraph_boundary_preferred_over_later_sentence_boundary() -> None:
    """A paragraph break inside the window wins over a sentence end further along."""
    first = "First paragraph. It has two sentences."
    second = "Second paragraph. More words here. And more."
    text = first + "\n\n" + second
    chunks = chunk_text(text, size=60, overlap=0)
    assert chunks[0].text == first + "\n\n"
    assert "".join(c.text for c in chunks) == text


def test_sentence_boundary_preferred_over_word_boundary() -> None:
    """Without a paragraph break the cut falls after a sentence end, not mid-sentence."""
    text = "Alpha beta gamma delta. Epsilon zeta eta theta iota kappa lambda mu."
    chunks = chunk_text(text, size=40, overlap=0)
    assert chunks[0].text == "Alpha beta gamma delta. "


def test_word_boundary_used_when_no_sentence_end() -> None:
    """Without sentence ends the cut falls after whitespace, never inside a word."""
    text = "alpha beta gamma delta epsilon zeta eta theta"
    chunks = chunk_text(text, size=20, overlap=0)
    assert chunks[0].text == "alpha beta gamma "
    assert all(not c.text[:1].isspace() for c in chunks)


def test_overlap_repeats_tail_of_previous_chunk() -> None:
    """With overlap the next chunk begins inside the previous one, at a word start."""
    text = " ".join(f"word{i}" for i in range(40))
    chunks = chunk_text(text, size=50, overlap=15)
    assert len(chunks) > 2
    for prev, nxt in pairwise(chunks):
        assert prev.end - 15 <= nxt.start < prev.end
        assert text[nxt.start - 1] == " "


def test_empty_text_gives_no_chunks() -> None:
    """Nothing to index means no chunks."""
    assert chunk_text("", size=10, overlap=2) == []


@pytest.mark.parametrize(
    ("size", "overlap", "message"),
    [
        (0, 0, "chunk size must be at least 1, got 0"),
        (-5, 0, "chunk size must be at least 1, got -5"),
        (10, 10, "chunk overlap must be between 0 and size - 1 (9), got 10"),
        (10, 25, "chunk overlap must be between 0 and size - 1 (9), got 25"),
        (10, -1, "chunk overlap must be between 0 and size - 1 (9), got -1"),
    ],
)
def test_bad_size_or_overlap_raise_value_error(size: int, overlap: int, message: str) -> None:
    """Invalid parameters are refused with a message naming the bad value."""
    with pytest.raises(ValueError) as info:
        chunk_text("some text", size=size, overlap=overlap)
    assert str(info.value) == message


def test_parsed_sections_chunk_at_their_edges_as_exact_slices_of_the_whole_text() -> None:
    sections = [
        Section("# Guide\nIntro.", headings=("Guide",)),
        Section("## Install\n" + "Run the installer and wait. " * 60, headings=("Guide", "Install")),
        Section(""),
        Section("## Use\nSearch.", headings=("Guide", "Use")),
    ]
    whole = ParsedFile("html", sections).text
    placed = chunk_sections(sections, size=400, overlap=40)
    assert [c.index for c, _ in placed] == list(range(len(placed)))
    assert all(whole[c.start : c.end] == c.text for c, _ in placed)
    install = [c for c, s in placed if s.headings == ("Guide", "Install")]
    assert len(install) >= 4 and install[0].text.startswith("## Install")
    assert placed[-1][1].headings == ("Guide", "Use") and placed[-1][0].text == "## Use\nSearch."
    assert "".join(c.text for c, _ in placed).count("Intro.") == 1


def test_short_sections_are_packed_but_never_across_a_page() -> None:
    heads = [Section(f"## H{i}\nline {i}.", headings=("H", f"H{i}")) for i in range(5)]
    packed = chunk_sections(heads, size=1000, overlap=100)
    assert len(packed) == 1 and "line 0." in packed[0][0].text and "line 4." in packed[0][0].text
    pages = [Section("first page.", page=1), Section("second page.", page=2)]
    assert [(c.text, s.page) for c, s in chunk_sections(pages, size=1000, overlap=100)] == [
        ("first page.", 1), ("second page.", 2),
    ]


def test_a_heading_packed_with_its_subsection_is_labelled_by_the_subsection() -> None:
    sections = [Section("# Garden", headings=("Garden",)), Section("## Compost\nTurn the heap weekly.", headings=("Garden", "Compost"))]
    ((chunk, section),) = chunk_sections(sections, size=1000, overlap=100)
    assert chunk.text.startswith("# Garden") and section.headings == ("Garden", "Compost")
