"""Word documents through python-docx, paragraphs under their heading path, and what every Office
Open XML reader shares (PowerPoint: :mod:`.slides`, Excel: :mod:`.sheets`). Each package's sizes
are checked first."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

from citadel.documents.formats.ziplimits import one_line, open_checked_zip
from citadel.documents.parsed import ParsedFile, ParseError, Section

OOXML = "an Office Open XML file"


def read_office(data: bytes, kind: str, read: Callable[[BytesIO], ParsedFile]) -> ParsedFile:
    """``read`` over the checked package; any failure of the reader is the file's, a ParseError."""
    open_checked_zip(data, OOXML).close()
    try:
        parsed = read(BytesIO(data))
    except ParseError:
        raise
    except Exception as exc:  # a corrupt package fails anywhere inside its reader: each failure is the file's
        raise ParseError(f"not a readable {kind} file: {type(exc).__name__}: {one_line(exc)}") from exc
    if not any(section.text for section in parsed.sections):
        raise ParseError(f"no text in the {kind} file")
    return parsed


def parse_docx(data: bytes) -> ParsedFile:
    """A Word document's paragraphs and tables in order, in sections at its Title and Heading N
    paragraphs."""
    return read_office(data, "DOCX", read_docx)


def clean(text: str | None) -> str:
    """``text`` with its runs of whitespace made single spaces."""
    return " ".join((text or "").split())


def heading_level(style_name: str) -> int | None:
    """0 for a Title paragraph, N for Heading N, None for body text."""
    if style_name == "Title":
        return 0
    prefix, _, number = style_name.partition(" ")
    if prefix == "Heading" and number.isdigit():
        return int(number)
    return None


class _Outline:
    """Blocks gathered into sections that start at each heading, with the path of headings above;
    consecutive list items stay lines of one block."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.path: list[tuple[int, str]] = []
        self.blocks: list[str] = []
        self.items: list[str] = []

    def add(self, text: str, item: bool = False) -> None:
        if item:
            self.items.append(text)
            return
        self.end_items()
        self.blocks.append(text)

    def end_items(self) -> None:
        if self.items:
            self.blocks.append("\n".join(self.items))
            self.items = []

    def heading(self, level: int, text: str) -> None:
        self.end_section()
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, text))
        self.blocks.append(text)

    def end_section(self) -> None:
        self.end_items()
        if self.blocks:
            self.sections.append(Section("\n\n".join(self.blocks), headings=tuple(text for _, text in self.path)))
        self.blocks = []


def read_docx(stream: BytesIO) -> ParsedFile:
    """The body's paragraphs and tables in order, sections starting at Title and Heading N paragraphs."""
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.table import Table

    document = docx.Document(stream)
    # Paragraph.style resolves the default style anew for each paragraph (three quarters of the
    # parse): each style id used is resolved once instead.
    names: dict[str | None, str] = {}
    outline = _Outline()
    title = clean(document.core_properties.title)
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            if rows := table_rows(item):
                outline.add("\n".join(rows))
            continue
        text = clean(item.text)
        if not text:
            continue
        style_id = item._p.style
        if style_id not in names:
            names[style_id] = document.part.get_style(style_id, WD_STYLE_TYPE.PARAGRAPH).name or ""
        style = names[style_id]
        level = heading_level(style)
        if level is None:
            outline.add(text, item=style.startswith("List"))
            continue
        outline.heading(level, text)
        if level == 0 and not title:
            title = text
    outline.end_section()
    return ParsedFile("docx", outline.sections, title=title or None)


def table_rows(table: Any) -> list[str]:
    """A Word table's rows as tab-separated cell text (a merged cell once)."""
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell._tc is not previous and (text := clean(cell.text)):
                cells.append(text)
            previous = cell._tc
        if cells:
            rows.append("\t".join(cells))
    return rows


def cell_text(value: object) -> str:
    """A cell's value as text: whole floats without ".0", dates in ISO form."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return str(isoformat())
    return clean(str(value))
