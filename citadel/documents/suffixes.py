"""Which file and object names are documents: the plain-text suffixes and the parsed ones."""

from __future__ import annotations

from citadel.documents.formats import RICH_SUFFIXES

PLAIN_SUFFIXES = (".txt", ".md", ".rst", ".json", ".jsonl", ".py")
SUPPORTED_SUFFIXES = PLAIN_SUFFIXES + RICH_SUFFIXES


def is_rich_suffix(suffix: str) -> bool:
    """Whether a file of ``suffix`` is parsed (PDF, HTML, Office, EPUB) rather than decoded."""
    return suffix.lower() in RICH_SUFFIXES
