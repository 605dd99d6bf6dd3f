"""The rich-format parsers on real files made by each format's own writer: what text they keep, in
what order, where each section sits, and the reason each hostile or unreadable file is refused."""

from __future__ import annotations

import zipfile
from io import BytesIO

import pytest

from citadel.documents.formats import PARSERS, RICH_SUFFIXES, ParseError, parse_bytes
from citadel.documents.formats.ziplimits import MAX_UNZIPPED_BYTES
from citadel.testing.richfiles import docx_bytes, epub_bytes, html_page, pdf_bytes, pptx_bytes, xlsx_bytes, zip_bomb

PAGES = [f"Page {n} opens here.\n\nIts second paragraph is number {n}." for n in (1, 2, 3)]
FURNITURE = ("SCRIPT-TEXT", "NAV-TEXT", "HEADER-TEXT", "FOOTER-TEXT", "color: red")


def test_a_pdf_gives_one_section_per_page_numbered_from_one_with_its_metadata_title() -> None:
    parsed = parse_bytes(".pdf", pdf_bytes(PAGES, title="Quarterly report"))
    assert parsed.format == "pdf" and parsed.pages == 3 and parsed.title == "Quarterly report"
    assert [section.page for section in parsed.sections] == [1, 2, 3]
    for number, section in enumerate(parsed.sections, start=1):
        assert section.text == f"Page {number} opens here.\nIts second paragraph is number {number}."
        assert "\r" not in section.text


def test_a_pdf_without_a_title_has_none() -> None:
    assert parse_bytes(".PDF", pdf_bytes(PAGES[:1])).title is None


def test_an_encrypted_pdf_is_refused_with_how_to_decrypt_it() -> None:
    with pytest.raises(ParseError) as refused:
        parse_bytes(".pdf", pdf_bytes(PAGES, password="secret"))
    assert str(refused.value) == "the PDF is encrypted; decrypt it (for example `qpdf --decrypt`) and index it again"


def test_a_pdf_of_drawings_only_is_refused_as_having_no_text_layer() -> None:
    with pytest.raises(ParseError) as refused:
        parse_bytes(".pdf", pdf_bytes(PAGES, drawing_only=True))
    assert str(refused.value) == (
        "the PDF has no text layer (a scanned document?); OCR is not supported: convert it with an OCR tool first"
    )


WHOLE_PDF = pdf_bytes(PAGES)


@pytest.mark.parametrize("data", [WHOLE_PDF[: len(WHOLE_PDF) // 2], b"<html>not a pdf</html>", b""], ids=["truncated", "html", "empty"])
def test_a_truncated_or_foreign_file_is_not_a_readable_pdf(data: bytes) -> None:
    with pytest.raises(ParseError, match=r"^not a readable PDF: .*Data format error"):
        parse_bytes(".pdf", data)


NESTED = [
    (None, "Before any heading."),
    (1, "Guide"),
    (None, "Guide intro."),
    (2, "Install"),
    (None, "Run the installer."),
    (3, "On Linux"),
    (None, "Use the package."),
    (2, "Use"),
    (None, "Open it."),
    (1, "Appendix"),
    (None, "The end."),
]


def test_html_keeps_the_main_text_in_sections_under_their_heading_paths_without_page_furniture() -> None:
    parsed = parse_bytes(".html", html_page(NESTED, title="The  guide").encode())
    assert parsed.format == "html" and parsed.title == "The guide"
    assert [(section.headings, section.text) for section in parsed.sections] == [
        ((), "Before any heading."),
        (("Guide",), "Guide\n\nGuide intro."),
        (("Guide", "Install"), "Install\n\nRun the installer."),
        (("Guide", "Install", "On Linux"), "On Linux\n\nUse the package."),
        (("Guide", "Use"), "Use\n\nOpen it."),
        (("Appendix",), "Appendix\n\nThe end."),
    ]
    assert not any(word in parsed.text for word in FURNITURE)


def test_html_without_main_reads_the_body_keeping_lists_as_lines_and_table_rows_as_cells() -> None:
    page = (
        "<html><body><div role='navigation'>Skip to content</div><aside>Related links</aside>"
        "<form><label>Search</label></form><h1>Notes</h1><p>First <b>bold</b>\n   words.</p>"
        "<ul><li>one</li><li>two</li></ul><p>Line<br>break</p>"
        "<table><tr><th>name</th><th>size</th></tr><tr><td>a</td><td>1</td></tr></table>"
        "<pre>  indented\n    code</pre><noscript>Enable JS</noscript></body></html>"
    )
    parsed = parse_bytes(".htm", page.encode())
    assert parsed.title is None
    assert [section.text for section in parsed.sections] == [
        "Notes\n\nFirst bold words.\n\none\ntwo\n\nLine\nbreak\n\nname\tsize\na\t1\n\n  indented\n    code"
    ]
    assert not any(word in parsed.text for word in ("Skip to content", "Related links", "Search", "Enable JS"))


def test_html_with_several_articles_keeps_them_all_and_takes_its_title_from_the_head_only() -> None:
    page = b"<html><body><svg><title>icon</title></svg>" + b"<article><h2>A</h2><p>a</p></article><article><h2>B</h2><p>b</p></article>"
    parsed = parse_bytes(".html", page)
    assert parsed.title is None
    assert [(section.headings, section.text) for section in parsed.sections] == [(("A",), "A\n\na"), (("B",), "B\n\nb")]


def test_html_is_decoded_by_its_meta_charset_or_its_bom() -> None:
    latin = "<html><head><meta charset='windows-1252'><title>Caf\u00e9</title></head><body><p>na\u00efve \u2013 ok</p></body></html>"
    assert parse_bytes(".html", latin.encode("cp1252")).text == "na\u00efve \u2013 ok"
    utf16 = "<html><body><p>\u00fcber</p></body></html>".encode("utf-16")
    assert parse_bytes(".xhtml", utf16).text == "\u00fcber"
    assert parse_bytes(".html", b"<p>bad \xff byte</p>").text == "bad \ufffd byte"


def test_an_html_page_of_only_markup_scripts_and_navigation_is_refused() -> None:
    with pytest.raises(ParseError, match=r"^no text in the HTML page"):
        parse_bytes(".html", b"<html><head><script>x()</script></head><body><nav>Home</nav><div> </div></body></html>")


def test_a_docx_gives_sections_under_its_title_and_headings_with_its_table_rows() -> None:
    outline = [(0, "Handbook"), (None, "Welcome."), (1, "Setup"), (None, "Install it.")]
    outline += [(2, "Linux"), (None, "Use apt."), (1, "Usage"), (None, "Run it.")]
    parsed = parse_bytes(".docx", docx_bytes(outline, title="The handbook", table=[["key", "value"], ["size", "10"]]))
    assert parsed.format == "docx" and parsed.title == "The handbook"
    assert [(section.headings, section.text) for section in parsed.sections] == [
        (("Handbook",), "Handbook\n\nWelcome."),
        (("Handbook", "Setup"), "Setup\n\nInstall it."),
        (("Handbook", "Setup", "Linux"), "Linux\n\nUse apt."),
        (("Handbook", "Usage"), "Usage\n\nRun it.\n\nkey\tvalue\nsize\t10"),
    ]


def test_a_docx_without_a_core_title_takes_its_title_paragraph() -> None:
    assert parse_bytes(".docx", docx_bytes([(0, "Handbook"), (None, "Text.")])).title == "Handbook"


def test_a_docx_keeps_consecutive_list_paragraphs_as_the_lines_of_one_block() -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("Steps:")
    document.add_paragraph("one", style="List Bullet")
    document.add_paragraph("two", style="List Number")
    document.add_paragraph("Done.")
    out = BytesIO()
    document.save(out)
    assert parse_bytes(".docx", out.getvalue()).text == "Steps:\n\none\ntwo\n\nDone."


def test_an_empty_docx_is_refused_as_having_no_text() -> None:
    with pytest.raises(ParseError, match=r"^no text in the DOCX file$"):
        parse_bytes(".docx", docx_bytes([]))


def test_a_pptx_slides_notes_and_tables_are_part_of_its_text() -> None:
    import pptx
    from pptx.util import Inches

    presentation = pptx.Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[5])  # title only
    slide.shapes.title.text = "Figures"
    table = slide.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for (row, column), value in {(0, 0): "year", (0, 1): "sales", (1, 0): "2025", (1, 1): "12"}.items():
        table.cell(row, column).text = value
    slide.notes_slide.notes_text_frame.text = "Mention the growth."
    out = BytesIO()
    presentation.save(out)
    [section] = parse_bytes(".pptx", out.getvalue()).sections
    assert section.text == "Figures\n\nyear\tsales\n2025\t12\n\nMention the growth."


def test_a_pptx_reads_text_inside_groups_and_line_breaks_in_order() -> None:
    import pptx
    from pptx.util import Inches

    presentation = pptx.Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[5])
    slide.shapes.title.text = "Layout"
    before = slide.shapes.add_textbox(Inches(1), Inches(1), Inches(3), Inches(1))
    before.text_frame.text = "First box"
    group = slide.shapes.add_group_shape()
    inner = group.shapes.add_textbox(Inches(1), Inches(3), Inches(3), Inches(1))
    inner.text_frame.text = "Grouped\vline"  # a line break inside one paragraph
    inner.text_frame.add_paragraph().text = "second paragraph"
    out = BytesIO()
    presentation.save(out)
    [section] = parse_bytes(".pptx", out.getvalue()).sections
    assert section.text == "Layout\n\nFirst box\n\nGrouped line\nsecond paragraph"


def test_a_pptx_gives_one_section_per_slide_headed_by_its_title() -> None:
    parsed = parse_bytes(".pptx", pptx_bytes([("Plan", ["Ship it", "Measure it"]), ("Risks", ["None known"])], title="Roadmap"))
    assert parsed.format == "pptx" and parsed.title == "Roadmap" and parsed.pages == 2
    assert [(section.page, section.headings, section.text) for section in parsed.sections] == [
        (1, ("Plan",), "Plan\n\nShip it\nMeasure it"),
        (2, ("Risks",), "Risks\n\nNone known"),
    ]


def test_an_xlsx_gives_one_section_per_sheet_with_rows_as_tab_separated_values() -> None:
    sheets = {"Prices": [["item", "price"], [None, None], ["tea", 2.0], ["cake", 3.5, None, "fresh"]], "Notes": [["only", None, "here"]]}
    parsed = parse_bytes(".xlsx", xlsx_bytes(sheets, title="Shop"))
    assert parsed.format == "xlsx" and parsed.title == "Shop" and parsed.pages == 2
    assert [(section.headings, section.text) for section in parsed.sections] == [
        (("Prices",), "item\tprice\ntea\t2\ncake\t3.5\tfresh"),
        (("Notes",), "only\there"),
    ]


def test_an_xlsx_shows_dates_in_iso_form_flags_and_numbers_as_computed_and_no_formula() -> None:
    import datetime as dt

    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Mixed"
    sheet.append(["when", dt.datetime(2024, 3, 5, 14, 30), dt.date(2023, 1, 2), True, 0.25, 7, "=1+2"])
    sheet["E1"].number_format = "0%"  # a number format that is not a date
    out = BytesIO()
    workbook.save(out)
    [section] = parse_bytes(".xlsx", out.getvalue()).sections
    # The formula was never computed (no cached value): nothing of it is text, never "=1+2".
    assert section.text == "when\t2024-03-05T14:30:00\t2023-01-02T00:00:00\tTrue\t0.25\t7"


def test_an_epub_gives_its_chapters_in_spine_order_numbered_with_their_headings() -> None:
    chapters = [[(1, "Beginning"), (None, "It starts."), (2, "Morning"), (None, "Sun.")], [(1, "End"), (None, "It ends.")]]
    parsed = parse_bytes(".epub", epub_bytes(chapters, title="A story"))
    assert parsed.format == "epub" and parsed.title == "A story" and parsed.pages == 2
    assert [(section.page, section.headings, section.text) for section in parsed.sections] == [
        (1, ("Beginning",), "Beginning\n\nIt starts."),
        (1, ("Beginning", "Morning"), "Morning\n\nSun."),
        (2, ("End",), "End\n\nIt ends."),
    ]


def test_an_epub_without_its_container_is_refused() -> None:
    out = BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip")
    with pytest.raises(ParseError, match=r"^not a readable EPUB: the package names 'META-INF/container.xml', which the zip does not hold$"):
        parse_bytes(".epub", out.getvalue())


@pytest.mark.parametrize("suffix", [".docx", ".pptx", ".xlsx"])
def test_a_password_protected_office_file_is_refused_as_encrypted_or_not_ooxml(suffix: str) -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1024)
    with pytest.raises(ParseError, match=r"^encrypted or not an Office Open XML file: an OLE compound file"):
        parse_bytes(suffix, ole)


@pytest.mark.parametrize("suffix", [".docx", ".pptx", ".xlsx", ".epub"])
def test_a_file_that_is_not_a_zip_is_refused_as_not_its_format(suffix: str) -> None:
    with pytest.raises(ParseError, match=r"^encrypted or not an? (Office Open XML file|EPUB): not a readable zip"):
        parse_bytes(suffix, b"plain text, not a package")


@pytest.mark.parametrize(("suffix", "kind"), [(".docx", "DOCX"), (".pptx", "PPTX"), (".xlsx", "XLSX")])
def test_a_zip_without_the_formats_parts_is_not_a_readable_office_file(suffix: str, kind: str) -> None:
    out = BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(ParseError, match=rf"^not a readable {kind} file: "):
        parse_bytes(suffix, out.getvalue())


def test_a_zip_bomb_declaring_more_than_the_limit_is_refused_before_inflating() -> None:
    bomb = zip_bomb(megabytes=600)
    assert len(bomb) < 4 * 1024 * 1024 and MAX_UNZIPPED_BYTES == 512 * 1024 * 1024
    with pytest.raises(ParseError) as refused:
        parse_bytes(".docx", bomb)
    assert str(refused.value) == "expands to 600 MB, over the limit of 512 MB (a zip bomb?)"


@pytest.mark.parametrize("suffix", [".docx", ".epub"])
def test_a_member_inflating_far_more_than_real_documents_do_is_refused(suffix: str) -> None:
    with pytest.raises(ParseError, match=r"^'word/document.xml' expands \d+x to 40 MB, over the limit of 100x \(a zip bomb\?\)$"):
        parse_bytes(suffix, zip_bomb(megabytes=40))


def test_every_rich_suffix_has_a_parser_and_another_suffix_is_refused() -> None:
    assert set(RICH_SUFFIXES) == set(PARSERS) == {".pdf", ".html", ".htm", ".xhtml", ".docx", ".pptx", ".xlsx", ".epub"}
    with pytest.raises(ParseError, match=r"^no parser for '\.odt'"):
        parse_bytes(".odt", b"data")
