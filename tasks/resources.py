"""Deprecated home of the shared backends: they live in :mod:`citadel.resources`, the core, since the
HTTP API and every flow use them and they need no Prefect. Kept one release for flows that import it."""

import warnings

from citadel.resources import get_resources, open_resources

__all__ = ["get_resources", "open_resources"]

warnings.warn(
    "tasks.resources is deprecated: import open_resources and get_resources from citadel.resources",
    DeprecationWarning,
    stacklevel=2,
)
