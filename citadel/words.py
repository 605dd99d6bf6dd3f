"""Counts in words a person reads: ``1 chunk``, ``3 chunks``."""

from __future__ import annotations


def plural(count: int, word: str, many: str | None = None) -> str:
    """``count`` and ``word``, in the plural (``many``, else ``word + "s"``) unless it is one."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"
