"""The parts of an Office Open XML package (a zip of XML parts tied by relationships), read with
lxml safely: the shared ground of the PPTX and XLSX readers."""

from __future__ import annotations

import posixpath
import zipfile

from lxml import etree

from citadel.documents.formats.office import clean
from citadel.documents.parsed import ParseError

R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
DC = "http://purl.org/dc/elements/1.1/"
RELATIONSHIP = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
DOCUMENT = "/officeDocument"  # the end of the main part's relationship type
# No entity expansion, no network, no huge trees: a package is untrusted input.
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)


class Package:
    """The parts of an Office package, read as XML, and their relationships."""

    def __init__(self, archive: zipfile.ZipFile, kind: str) -> None:
        self.archive = archive
        self.kind = kind
        self.names = set(archive.namelist())

    def xml(self, name: str) -> etree._Element:
        """Part ``name`` parsed; a ParseError when the package lacks it."""
        if name not in self.names:
            raise ParseError(f"not a readable {self.kind} file: the package has no part {name!r}")
        return etree.fromstring(self.archive.read(name), PARSER)

    def related(self, part: str) -> dict[str, tuple[str, str]]:
        """The relationships of ``part`` ("" for the package's own): id -> (type, the target part's name)."""
        folder, _, file = part.rpartition("/")
        rels = f"{folder}/_rels/{file}.rels" if folder else f"_rels/{file}.rels"
        if rels not in self.names:
            return {}
        return {
            str(rel.get("Id")): (str(rel.get("Type")), _part_name(folder, str(rel.get("Target"))))
            for rel in self.xml(rels).iter(RELATIONSHIP)
            if rel.get("TargetMode") != "External"
        }

    def main(self, default: str) -> str:
        """The package's main part (``ppt/presentation.xml``, ``xl/workbook.xml``)."""
        return next((target for kind, target in self.related("").values() if kind.endswith(DOCUMENT)), default)

    def title(self) -> str:
        """The title of the package's core properties, or ""."""
        if "docProps/core.xml" not in self.names:
            return ""
        found = self.xml("docProps/core.xml").find(f"{{{DC}}}title")
        return clean(found.text if found is not None else "")


def _part_name(folder: str, target: str) -> str:
    """A relationship's target as a part name: relative to the source part's folder, or to the
    package's root when it starts with "/"."""
    if target.startswith("/"):
        return posixpath.normpath(target.lstrip("/"))
    return posixpath.normpath(posixpath.join(folder, target))
