"""Deterministic chunking that prefers paragraph, then sentence, then word boundaries.

Every chunk is an exact slice ``text[start:end]``; consecutive chunks touch or overlap, so the
chunks together always cover the whole text and nothing is lost.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from citadel.documents.parsed import Section
from citadel.hashing import sha256_text

CHUNKER_VERSION = "c1"
"""Changes whenever the same text and settings would cut different chunks, so documents re-chunk."""

_SENTENCE_END = re.compile(r"[.!?;:][\"')\]]*\s+|\n")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One slice of a document: its position, the exact text and where it came from."""

    index: int
    text: str
    start: int
    end: int

    @property
    def hash(self) -> str:
        return sha256_text(self.text)


def _last_match_end(pattern: re.Pattern[str], text: str, lo: int, hi: int) -> int:
    """End offset of the last match of ``pattern`` inside ``text[lo:hi]``, or -1."""
    best = -1
    for match in pattern.finditer(text, lo, hi):
        best = match.end()
    return best


def _cut(text: str, start: int, size: int, min_end: int = 0) -> int:
    """Where the chunk beginning at ``start`` should end: the best boundary within ``size``.

    ``min_end`` (the previous chunk's end) keeps a chunk from lying inside the one before it.
    """
    limit = start + size
    if limit >= len(text):
        return len(text)
    floor = max(start + max(1, size // 2), min_end)  # never cut so early that chunks become tiny
    paragraph = text.rfind("\n\n", floor, limit)
    if paragraph != -1:
        return paragraph + 2
    sentence = _last_match_end(_SENTENCE_END, text, floor, limit)
    if sentence > floor:
        return sentence
    word = _last_match_end(_WHITESPACE, text, floor, limit)
    if word > floor:
        return word
    return limit


def _overlap_start(text: str, start: int, end: int, overlap: int) -> int:
    """Start of the next chunk: ``overlap`` characters back from ``end``, moved to a word start."""
    if overlap <= 0 or end >= len(text):
        return end
    candidate = max(start + 1, end - overlap)
    space = text.find(" ", candidate, end)
    if space != -1 and space + 1 < end:
        return space + 1
    return candidate


def chunk_text(text: str, size: int = 1000, overlap: int = 100) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``size`` characters overlapping by up to ``overlap``.

    >>> [c.text for c in chunk_text("one. two. three.", size=10, overlap=0)]
    ['one. two. ', 'three.']
    """
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap must be between 0 and size - 1 ({size - 1}), got {overlap}")
    chunks: list[Chunk] = []
    start = 0
    while start < len(text):
        end = _cut(text, start, size, chunks[-1].end if chunks else 0)
        chunks.append(Chunk(len(chunks), text[start:end], start, end))
        if end >= len(text):
            break
        start = _overlap_start(text, start, end, overlap)
    return chunks


SECTION_GAP = "\n\n"
"""Between two sections in a document's whole text (as :attr:`ParsedFile.text` joins them)."""


def _units(sections: Sequence[Section], size: int) -> list[tuple[int, int]]:
    """Runs of consecutive sections (first, last index) to chunk as one text: short sections on
    the same page are packed up to ``size`` characters, so many small headings do not each make
    a tiny chunk, and no chunk spans two pages."""
    units: list[tuple[int, int]] = []
    first, length = 0, -len(SECTION_GAP)
    for i, section in enumerate(sections):
        grown = length + len(SECTION_GAP) + len(section.text)
        if i > first and (grown > size or section.page != sections[first].page):
            units.append((first, i - 1))
            first, grown = i, len(section.text)
        length = grown
    if sections:
        units.append((first, len(sections) - 1))
    return units


def chunk_sections(sections: Sequence[Section], size: int = 1000, overlap: int = 100) -> list[tuple[Chunk, Section]]:
    """Chunk a parsed document so that chunks end at its sections' edges (pages, headings): each
    chunk with the section that holds most of its text (a heading packed with its subsection's
    paragraph is labelled by the subsection). Indexes and offsets run over the whole text, the
    non-empty sections joined by blank lines, so every chunk is an exact slice of it."""
    kept = [s for s in sections if s.text]
    out: list[tuple[Chunk, Section]] = []
    offsets: list[int] = []
    position = 0
    for section in kept:
        offsets.append(position)
        position += len(section.text) + len(SECTION_GAP)
    for first, last in _units(kept, size):
        text = SECTION_GAP.join(s.text for s in kept[first : last + 1])
        base = offsets[first]
        for piece in chunk_text(text, size, overlap):
            start, end = base + piece.start, base + piece.end
            holder = max(range(first, last + 1), key=lambda i: min(end, offsets[i] + len(kept[i].text)) - max(start, offsets[i]))
            out.append((Chunk(len(out), piece.text, start, end), kept[holder]))
    return out
