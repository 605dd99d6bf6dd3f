"""What a parser makes of a file that is not plain text (PDF, HTML, Office, EPUB): its title and its
text in sections, each with where it sits (its page, or the path of headings above it), so that a
chunk can say where it was found and chunk boundaries can follow the document's structure."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Section:
    """A part of a document's text: a PDF page, a slide, a sheet, or what sits under one heading."""

    text: str
    page: int | None = None  # 1-based: a PDF page, a slide, an EPUB chapter
    headings: tuple[str, ...] = ()  # the path of headings above this text, outermost first

    def location(self) -> dict[str, object]:
        """The section's place, for its chunks' metadata (only what it has)."""
        where: dict[str, object] = {}
        if self.page is not None:
            where["page"] = self.page
        if self.headings:
            where["section"] = " > ".join(self.headings)
        return where


@dataclass(frozen=True)
class ParsedFile:
    """A file's text as its parser found it."""

    format: str  # "pdf", "html", "docx", "pptx", "xlsx", "epub"
    sections: list[Section] = field(default_factory=list)
    title: str | None = None
    pages: int | None = None  # PDF pages, slides or sheets, where the format has them

    @property
    def text(self) -> str:
        return "\n\n".join(section.text for section in self.sections if section.text)


class ParseError(ValueError):
    """A file that cannot become text (encrypted, no text layer, corrupt): its message is the dead
    letter's reason, and says what to do where something can be done."""
