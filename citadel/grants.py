"""What a caller may reach: collections by name or glob, and the source folders and buckets it may name.

A key or token carries its grants; none reaches nothing, ``admin`` reaches everything. Collection
patterns are case-sensitive globs of ``*`` and ``?`` over the names Citadel allows (ASCII letters,
digits, ``_ . -``), so no case or Unicode variant of a name matches a pattern that does not spell
it. A blue-green version (``docs__v2``) belongs to its collection (``docs``): it is reached
through its collection's grant, never through a pattern of its own. Source grants narrow the
service's own sandbox (``CITADEL_API_SOURCE_ROOTS`` / ``_BUCKETS``), which stays the outer bound
(``*``: all of it).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from citadel.collections import versioned
from citadel.documents import SourceRoots, is_s3_uri
from citadel.errors import ConfigurationError

EVERY = "*"
# A collection pattern: the characters of a collection name, and the wildcards * and ?.
_PATTERN = re.compile(r"[A-Za-z0-9_.\-*?]{1,255}")


def parse_collections(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Collection patterns from ``"team-a-*,shared"`` or a list, each checked; ``()`` for none."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else [str(item) for item in value]
    patterns = sorted({item.strip() for item in items if item.strip()})
    bad = [pattern for pattern in patterns if not _PATTERN.fullmatch(pattern)]
    if bad:
        raise ConfigurationError(
            f"collection grant {bad[0]!r} is not a collection name or pattern: use letters, digits, '_', '.', '-' "
            "and the wildcards '*' and '?' (for example 'team-a-*'; '*' reaches every collection)"
        )
    return tuple(patterns)


def parse_sources(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Source grants from ``"/srv/team-a,s3://bucket/team-a/"`` or a list: absolute folders and ``s3://`` prefixes."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else [str(item) for item in value]
    sources = sorted({item.strip() for item in items if item.strip()})
    for source in sources:
        if source != EVERY and not is_s3_uri(source) and not os.path.isabs(source):
            raise ConfigurationError(
                f"source grant {source!r}: give an absolute folder, an s3://bucket/prefix, or '*' for all the service's"
            )
    SourceRoots.of(source for source in sources if source != EVERY)  # an s3:// entry without a bucket fails here
    return tuple(sources)


@dataclass(frozen=True)
class Grants:
    """The collections (patterns) and sources a caller may reach; ``everything`` for admin."""

    collections: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    everything: bool = False

    @property
    def every_collection(self) -> bool:
        """Whether no collection is out of reach (admin, or the ``*`` pattern)."""
        return self.everything or EVERY in self.collections

    def reaches(self, collection: str) -> bool:
        """Whether ``collection`` (or the collection it is a blue-green version of) is granted."""
        if self.every_collection:
            return True
        name = versioned(collection) or collection
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.collections)

    def sandbox(self, service: SourceRoots) -> SourceRoots:
        """The folders and buckets this caller's runs may read: its grants inside the service's own.

        A granted folder counts only where it lies inside one of the service's roots (both resolved,
        symlinks followed); a granted prefix only under one of the service's buckets and prefixes.
        """
        return service if self.everything or EVERY in self.sources else service.narrowed_to(self.sources)

    def describe(self) -> str:
        """The grants in a line, for the CLI and logs."""
        if self.everything:
            return "every collection and source (admin)"
        collections = ", ".join(self.collections) or "none"
        return f"collections {collections}; sources {', '.join(self.sources) or 'none'}"
