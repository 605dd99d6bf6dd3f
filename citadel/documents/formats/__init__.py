"""Parsers for rich document formats (PDF, HTML, Office, EPUB), each bytes in, a ParsedFile out."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from citadel.documents.parsed import ParsedFile, ParseError

# suffix: (module, function); a module is imported on first use, since PDFium and openpyxl take time to load
_PARSERS = {
    ".pdf": ("pdf", "parse_pdf"),
    ".html": ("html", "parse_html"),
    ".htm": ("html", "parse_html"),
    ".xhtml": ("html", "parse_html"),
    ".docx": ("office", "parse_docx"),
    ".pptx": ("slides", "parse_pptx"),
    ".xlsx": ("sheets", "parse_xlsx"),
    ".epub": ("epub", "parse_epub"),
}
RICH_SUFFIXES: tuple[str, ...] = tuple(_PARSERS)


def _lazy(module: str, function: str) -> Callable[[bytes], ParsedFile]:
    def parse(data: bytes) -> ParsedFile:
        parser: Callable[[bytes], ParsedFile] = getattr(importlib.import_module(f"{__name__}.{module}"), function)
        return parser(data)

    parse.__name__ = function
    parse.__doc__ = f"{function} of citadel.documents.formats.{module}, imported on first call."
    return parse


PARSERS: dict[str, Callable[[bytes], ParsedFile]] = {suffix: _lazy(*target) for suffix, target in _PARSERS.items()}


def parse_bytes(suffix: str, data: bytes) -> ParsedFile:
    """``data`` parsed by the parser of ``suffix`` (".pdf", case-insensitive); a ParseError for a
    suffix no parser reads, or for a file its parser cannot read."""
    parser = PARSERS.get(suffix.lower())
    if parser is None:
        raise ParseError(f"no parser for {suffix or 'files without a suffix'!r}; the rich formats are {', '.join(RICH_SUFFIXES)}")
    return parser(data)


__all__ = ["PARSERS", "RICH_SUFFIXES", "ParseError", "ParsedFile", "parse_bytes"]
