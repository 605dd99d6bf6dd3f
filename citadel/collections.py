"""Collection names: checked before any backend sees them, without importing a backend client."""

from __future__ import annotations

import re

from citadel.errors import ConfigurationError

_COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


def check_collection_name(name: str) -> str:
    """``name`` when it is a valid collection name (letters, digits, ``_ . -``), else a ConfigurationError."""
    if not _COLLECTION_NAME.fullmatch(name):
        raise ConfigurationError(
            f"invalid collection name {name!r}: use letters, digits, '_', '.' and '-' (at most 255, starting with a letter or digit)"
        )
    return name
