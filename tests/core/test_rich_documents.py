"""A folder of the documents people have (PDF, HTML, Word, PowerPoint, Excel, EPUB, Markdown) indexed
by the real run on the embedded store and SQLite registry: each format's text is found with where it
sits (page, section, title), every hostile file is a dead letter with its reason while the rest of
its batch is indexed, and counts stay exact through an unchanged re-run and an edit."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel.documents import close_shared_pool
from citadel.indexing import index_source
from citadel.resources import Resources
from citadel.search import search_with
from citadel.settings import Settings
from citadel.testing.richfiles import docx_bytes, epub_bytes, html_page, pdf_bytes, pptx_bytes, xlsx_bytes, zip_bomb

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]  # it starts the parser pool's processes


def _folder(root: Path) -> Path:
    root.mkdir()
    (root / "manual.pdf").write_bytes(pdf_bytes(
        ["Chapter one covers the harbour.", "The lighthouse keeper trims the quartz lamp every evening."],
        title="Keeper's Manual",
    ))
    (root / "page.html").write_bytes(html_page([
        (1, "Gardening"), (2, "Compost"), (None, "Turn the compost heap with a pitchfork weekly."),
    ], title="Garden notes").encode())
    (root / "report.docx").write_bytes(docx_bytes([
        (1, "Findings"), (None, "Zebras prefer the northern meadow in spring."),
    ], title="Field report"))
    (root / "deck.pptx").write_bytes(pptx_bytes([("Roadmap", ["Ship the glacier telemetry in March."])]))
    (root / "budget.xlsx").write_bytes(xlsx_bytes({"Costs": [["item", "euros"], ["volcano sensors", 1200]]}))
    (root / "book.epub").write_bytes(epub_bytes([[(1, "Voyage"), (None, "The albatross followed the ship for days.")]]))
    (root / "notes.md").write_text("# Notes\n\nPlain markdown about tangerines.\n")
    # Hostile files: each must become a dead letter with its reason, and only that.
    (root / "locked.pdf").write_bytes(pdf_bytes(["secret"], password="pw"))
    (root / "scan.pdf").write_bytes(pdf_bytes(["ignored"], drawing_only=True))
    (root / "torn.pdf").write_bytes(pdf_bytes(["a page that was cut"])[:300])
    (root / "bomb.docx").write_bytes(zip_bomb())
    return root


async def _find(resources: Resources, collection: str, query: str) -> dict[str, object]:
    hits = (await search_with(resources, query, collection, limit=20)).hits
    best = next((hit for hit in hits if hit.text and query.split()[-1] in hit.text), None)
    assert best is not None, f"{query!r} not found in {[hit.text for hit in hits]}"
    return best.model_dump()


async def test_every_format_is_indexed_with_where_it_sits_and_every_hostile_file_is_a_dead_letter(
    data_dir: Path, tmp_path: Path, collection_name: str
) -> None:
    folder = _folder(tmp_path / "docs")
    resources = Resources(Settings())
    try:
        first = await index_source(resources, str(folder), collection_name)
        assert (first.added, first.failed) == (7, 4), first
        registry = await resources.registry()
        letters = {Path(letter.document_id).name: letter.error for letter in await registry.dead_letters(collection_name)}
        assert "encrypted" in letters["locked.pdf"]
        assert "no text layer" in letters["scan.pdf"] and "OCR" in letters["scan.pdf"]
        assert "not a readable PDF" in letters["torn.pdf"]
        assert "expands to" in letters["bomb.docx"]
        assert await resources.store.count(collection_name) == await registry.count_chunks(collection_name)

        lamp = await _find(resources, collection_name, "keeper trims the quartz lamp")
        assert (lamp["title"], lamp["page"]) == ("Keeper's Manual", 2) and str(lamp["uri"]).endswith("manual.pdf")
        compost = await _find(resources, collection_name, "turn the compost heap")
        assert compost["title"] == "Garden notes" and compost["section"] == "Gardening > Compost"
        assert (await _find(resources, collection_name, "zebras northern meadow"))["section"] == "Findings"
        assert (await _find(resources, collection_name, "glacier telemetry"))["page"] == 1
        assert (await _find(resources, collection_name, "volcano sensors"))["section"] == "Costs"
        assert (await _find(resources, collection_name, "albatross followed"))["page"] == 1

        again = await index_source(resources, str(folder), collection_name)
        assert (again.added, again.updated, again.unchanged, again.chunks_embedded) == (0, 0, 7, 0), again

        (folder / "manual.pdf").write_bytes(pdf_bytes(
            ["Chapter one covers the harbour.", "The keeper now trims the lamp at dawn."], title="Keeper's Manual",
        ))
        (folder / "scan.pdf").unlink()
        edited = await index_source(resources, str(folder), collection_name)
        assert (edited.updated, edited.unchanged) == (1, 6), edited
        assert await resources.store.count(collection_name) == await registry.count_chunks(collection_name)
        assert (await _find(resources, collection_name, "trims the lamp at dawn"))["page"] == 2
    finally:
        await resources.aclose()
        close_shared_pool()
