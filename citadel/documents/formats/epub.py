"""EPUB books: the zip's container names the package document, whose spine orders the XHTML
chapters; each chapter is read as HTML, its sections numbered by the chapter (``page``)."""

from __future__ import annotations

import posixpath
import zipfile
from urllib.parse import unquote
from xml.etree import ElementTree

from citadel.documents.formats.html import decode_html, html_sections
from citadel.documents.formats.ziplimits import one_line, open_checked_zip
from citadel.documents.parsed import ParsedFile, ParseError, Section

CONTAINER = "META-INF/container.xml"
NS = {
    "c": "urn:oasis:names:tc:opendocument:xmlns:container",
    "opf": "http://www.idpf.org/2007/opf",
    "dc": "http://purl.org/dc/elements/1.1/",
}
XHTML_TYPES = {"application/xhtml+xml", "text/html"}


def parse_epub(data: bytes) -> ParsedFile:
    """A book's chapters in reading order, as sections under their headings, and its dc:title."""
    archive = open_checked_zip(data, "an EPUB")
    try:
        title, chapters = read_package(archive)
        sections: list[Section] = []
        for number, name in enumerate(chapters, start=1):
            sections.extend(html_sections(decode_html(read_member(archive, name)), page=number)[1])
    except (zipfile.BadZipFile, ElementTree.ParseError, OSError, EOFError, KeyError) as exc:
        raise ParseError(f"not a readable EPUB: {one_line(exc)}") from exc
    finally:
        archive.close()
    if not sections:
        raise ParseError("no text in the EPUB's chapters")
    return ParsedFile("epub", sections, title=title, pages=len(chapters))


def read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError as exc:
        raise ParseError(f"not a readable EPUB: the package names {name!r}, which the zip does not hold") from exc


def read_package(archive: zipfile.ZipFile) -> tuple[str | None, list[str]]:
    """The book's title and its spine's XHTML items as zip member names, in reading order."""
    container = ElementTree.fromstring(read_member(archive, CONTAINER))
    rootfile = container.find("c:rootfiles/c:rootfile", NS)
    opf_path = rootfile.get("full-path") if rootfile is not None else None
    if not opf_path:
        raise ParseError("not a readable EPUB: its container names no package document")
    package = ElementTree.fromstring(read_member(archive, opf_path))
    title_node = package.find("opf:metadata/dc:title", NS)
    title = " ".join((title_node.text or "").split()) if title_node is not None else ""
    base = posixpath.dirname(opf_path)
    items = {
        item.get("id"): (item.get("href") or "", item.get("media-type") or "")
        for item in package.iterfind("opf:manifest/opf:item", NS)
    }
    chapters: list[str] = []
    for itemref in package.iterfind("opf:spine/opf:itemref", NS):
        href, media_type = items.get(itemref.get("idref"), ("", ""))
        if href and media_type in XHTML_TYPES:
            chapters.append(posixpath.normpath(posixpath.join(base, unquote(href.split("#")[0]))))
    if not chapters:
        raise ParseError("not a readable EPUB: its spine lists no XHTML chapters")
    return title or None, chapters
