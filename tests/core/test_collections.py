"""Collection names are checked before any backend sees them."""

from __future__ import annotations

import pytest

from citadel.collections import check_collection_name
from citadel.errors import ConfigurationError


def test_collection_names_are_checked() -> None:
    """Names that Qdrant or a point id could misread are refused with the rule."""
    assert check_collection_name("docs_v2.1-a") == "docs_v2.1-a"
    for bad in ("", "-lead", "has space", "a/b", "tab\x1fsep", "x" * 256):
        with pytest.raises(ConfigurationError, match="invalid collection name"):
            check_collection_name(bad)
