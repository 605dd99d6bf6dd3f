"""The installed Citadel's version, reported by health and the OpenAPI document."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("citadel")
except PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0.0.0+source"
