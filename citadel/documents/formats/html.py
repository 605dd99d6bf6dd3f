"""HTML pages through Lexbor (selectolax): the main text without navigation, scripts or page
furniture, in sections split at headings, each knowing the path of headings above it."""

from __future__ import annotations

import codecs
import re

from selectolax.lexbor import LexborHTMLParser, LexborNode

from citadel.documents.parsed import ParsedFile, ParseError, Section

DROPPED = ["script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "svg", "iframe"]
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
BLOCKS = frozenset(
    "p div section article main ul ol dl table blockquote figure figcaption address hr details summary"
    " fieldset center caption thead tbody tfoot body html".split()
)
LINES = frozenset("li tr dt dd br option".split())
CELLS = frozenset(("td", "th"))
CELL = "\x1f"  # a cell's end inside a table row, until the row becomes tab-separated text
META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.IGNORECASE)
BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def parse_html(data: bytes) -> ParsedFile:
    """An HTML page's title and its main text in sections split at its headings."""
    title, sections = html_sections(decode_html(data))
    if not sections:
        raise ParseError("no text in the HTML page (only markup, scripts or navigation)")
    return ParsedFile("html", sections, title=title)


def decode_html(data: bytes) -> str:
    """The page's text by its BOM or its ``<meta charset>``, else UTF-8; bad bytes replaced."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    declared = META_CHARSET.search(data[:4096])
    encoding = "utf-8"
    if declared:
        try:
            encoding = codecs.lookup(declared.group(1).decode("ascii")).name
        except LookupError:
            pass
    return data.decode(encoding, errors="replace")


def html_sections(markup: str, page: int | None = None) -> tuple[str | None, list[Section]]:
    """The title and the non-empty sections of one HTML document; ``page`` is given to each
    section (an EPUB's chapter number)."""
    tree = LexborHTMLParser(markup)
    title_node = tree.head.css_first("title") if tree.head is not None else None  # not an SVG's <title>
    title = " ".join(title_node.text().split()) if title_node is not None else ""
    tree.strip_tags(DROPPED)
    for node in tree.css('[role="navigation"]'):
        node.decompose()
    articles = tree.css("article")
    # one article is the page's content; several (a blog's front page) are all of it
    root = tree.css_first("main") or (articles[0] if len(articles) == 1 else None) or tree.body or tree.root
    walker = _Walker(page)
    if root is not None:
        try:
            walker.visit(root)
        except RecursionError as exc:
            raise ParseError("the HTML nests its elements too deeply to read") from exc
    return title or None, walker.finish()


class _Walker:
    """Text gathered in document order: inline text into lines, lines into blocks (separated by a
    blank line), blocks into sections that start at each heading."""

    def __init__(self, page: int | None) -> None:
        self.page = page
        self.sections: list[Section] = []
        self.path: list[tuple[int, str]] = []  # (level, heading) from the outermost down
        self.blocks: list[str] = []
        self.lines: list[str] = []
        self.words: list[str] = []

    def visit(self, node: LexborNode) -> None:
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                self.words.append(child.text_content or "")
            elif tag in HEADINGS:
                self.heading(HEADINGS[tag], " ".join(child.text().split()))
            elif tag == "pre":
                self.end_block()
                self.blocks.append(child.text().strip("\n"))
            elif tag in BLOCKS:
                self.end_block()
                self.visit(child)
                self.end_block()
            elif tag in LINES:
                self.end_line()
                self.visit(child)
                self.end_line()
            elif tag in CELLS:
                self.visit(child)
                self.words.append(CELL)
            elif tag and not tag.startswith("-"):
                self.visit(child)

    def end_line(self) -> None:
        if not self.words:
            return
        cells = "".join(self.words).split(CELL)
        line = "\t".join(text for cell in cells if (text := " ".join(cell.split())))
        self.words = []
        if line:
            self.lines.append(line)

    def end_block(self) -> None:
        self.end_line()
        if self.lines:
            self.blocks.append("\n".join(self.lines))
            self.lines = []

    def end_section(self) -> None:
        self.end_block()
        text = "\n\n".join(self.blocks)
        self.blocks = []
        if text.strip():
            self.sections.append(Section(text, page=self.page, headings=tuple(heading for _, heading in self.path)))

    def heading(self, level: int, text: str) -> None:
        self.end_section()
        if not text:
            return
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, text))
        self.blocks.append(text)

    def finish(self) -> list[Section]:
        self.end_section()
        return self.sections
