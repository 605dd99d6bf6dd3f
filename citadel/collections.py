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


# A blue-green collection's versions are named ``<name>__v<n>`` (see citadel.indexing.bluegreen).
SEPARATOR = "__v"


def version_number(collection: str, name: str) -> int | None:
    """Which version of ``collection`` the collection ``name`` is, or None when it is none."""
    match = re.fullmatch(re.escape(collection + SEPARATOR) + r"([1-9][0-9]*)", name)
    return int(match.group(1)) if match else None


def versioned(name: str) -> str | None:
    """The blue-green collection ``name`` is a version of (``docs`` for ``docs__v3``), or None."""
    base = name.rpartition(SEPARATOR)[0]
    return base if base and version_number(base, name) is not None else None
