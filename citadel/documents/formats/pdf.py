"""PDF text layers through PDFium (pypdfium2): one section per page, read many times faster than a
pure-Python reader; a scanned PDF without a text layer is refused rather than indexed as nothing."""

from __future__ import annotations

import pypdfium2

from citadel.documents.formats.ziplimits import one_line
from citadel.documents.parsed import ParsedFile, ParseError, Section

PASSWORD_ERRORS = {4, 6}  # PDFium's FPDF_ERR_PASSWORD and FPDF_ERR_SECURITY
ENCRYPTED = "the PDF is encrypted; decrypt it (for example `qpdf --decrypt`) and index it again"
NO_TEXT_LAYER = "the PDF has no text layer (a scanned document?); OCR is not supported: convert it with an OCR tool first"


def parse_pdf(data: bytes) -> ParsedFile:
    """A PDF's pages as sections (``page`` 1-based) and its metadata title."""
    try:
        document = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as exc:
        if getattr(exc, "err_code", None) in PASSWORD_ERRORS:
            raise ParseError(ENCRYPTED) from exc
        raise ParseError(f"not a readable PDF: {one_line(exc)}") from exc
    try:
        title = metadata_title(document)
        sections = [Section(text, page=number) for number, text in enumerate(page_texts(document), start=1)]
    except pypdfium2.PdfiumError as exc:
        raise ParseError(f"not a readable PDF: {one_line(exc)}") from exc
    finally:
        document.close()
    if not any(section.text for section in sections):
        raise ParseError(NO_TEXT_LAYER)
    return ParsedFile("pdf", sections, title=title, pages=len(sections))


def page_texts(document: pypdfium2.PdfDocument) -> list[str]:
    """Each page's text layer, in page order, with PDFium's CRLF line ends made plain."""
    texts: list[str] = []
    for index in range(len(document)):
        page = document[index]
        try:
            textpage = page.get_textpage()
            try:
                raw: str = textpage.get_text_range()
            finally:
                textpage.close()
        finally:
            page.close()
        texts.append(raw.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").strip())
    return texts


def metadata_title(document: pypdfium2.PdfDocument) -> str | None:
    """The document information's Title, if it has a non-blank one."""
    title = document.get_metadata_value("Title")
    return " ".join(str(title).split()) or None
