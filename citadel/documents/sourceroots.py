"""The source-root sandbox: which files and which object-storage prefixes a run started over HTTP
may list and open.

Such a run has the service's file access, so every path it lists or opens is resolved (symlinks,
``..``) and must lie inside the roots (CITADEL_API_SOURCE_ROOTS): a glob is expanded one folder at
a time without entering one that leads out, and a file is opened without following a symlink
swapped in since it was checked, then checked again on the opened descriptor.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from citadel.documents.s3uri import S3Location, is_s3_uri, parse_s3_uri


def inside(path: Path, folders: Sequence[Path]) -> bool:
    """Whether ``path`` is one of ``folders`` or lies below one (both already resolved)."""
    return any(path == folder or folder in path.parents for folder in folders)


OUTSIDE_ROOTS = "leads outside the folders this service may index (CITADEL_API_SOURCE_ROOTS)"


@dataclass(frozen=True)
class SourceRoots:
    """The folders a sandboxed run may read (CITADEL_API_SOURCE_ROOTS), resolved once, and the
    ``s3://`` buckets and prefixes it may list (CITADEL_API_SOURCE_BUCKETS).

    Every path such a run lists or opens is resolved (symlinks, ``..``) and must lie inside one.
    """

    folders: tuple[Path, ...]
    buckets: tuple[S3Location, ...] = ()

    @classmethod
    def of(cls, roots: Iterable[str | os.PathLike[str]]) -> SourceRoots:
        """The roots ``roots`` name: folders, each resolved, and ``s3://bucket/prefix`` entries."""
        entries = [str(root) for root in roots]
        return cls(
            tuple(Path(os.path.realpath(os.path.expanduser(entry))) for entry in entries if not is_s3_uri(entry)),
            tuple(parse_s3_uri(entry) for entry in entries if is_s3_uri(entry)),
        )

    def holds_location(self, location: S3Location) -> bool:
        """Whether an ``s3://`` source lies under one of the allowed buckets and prefixes."""
        return any(location.bucket == allowed.bucket and location.prefix.startswith(allowed.prefix) for allowed in self.buckets)

    def holds(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path``, once resolved, lies inside one of the roots."""
        return inside(Path(os.path.realpath(path)), self.folders)

    def narrowed_to(self, entries: Iterable[str]) -> SourceRoots:
        """The folders and ``s3://`` prefixes of ``entries`` that lie inside these roots (a caller's
        source grants inside the service's sandbox): folders resolved, prefixes under an allowed one."""
        granted = SourceRoots.of(entries)
        return SourceRoots(
            tuple(folder for folder in granted.folders if inside(folder, self.folders)),
            tuple(location for location in granted.buckets if self.holds_location(location)),
        )


def is_inline_name(name: str) -> bool:
    """Whether ``name`` names inline records rather than a path: it has no path separator (every
    file source's key is an absolute path, so an inline name never names one)."""
    return "/" not in name and "\\" not in name


def source_name_problem(name: str, roots: SourceRoots) -> str | None:
    """Why a sandboxed run may not file inline records under ``name``, or None.

    A name without a path separator is an inline name: every file source's key is an absolute
    path, so it never names (nor prunes) one. A name with a separator must be an absolute path
    that resolves inside the roots.
    """
    if is_inline_name(name):
        return None
    if os.path.isabs(name) and roots.holds(name):
        return None
    return (
        f"source_name {name!r} is a path outside the folders this service may index (CITADEL_API_SOURCE_ROOTS); "
        "name inline records without '/' (e.g. 'crm'), or give an absolute path inside a source root"
    )


class _GlobWalk:
    """One expansion of a pattern inside ``roots``: what it found, and what it left out."""

    def __init__(self, roots: SourceRoots) -> None:
        self.roots = roots
        self.found: list[Path] = []
        self.outside: list[str] = []

    def enter(self, folder: Path, ancestors: frozenset[Path]) -> frozenset[Path] | None:
        """The folders above and at ``folder`` (resolved) once it may be entered, else None."""
        real = Path(os.path.realpath(folder))
        if not inside(real, self.roots.folders):
            self.outside.append(str(folder))
            return None
        if real in ancestors or not real.is_dir():  # a symlink loop, or not a folder
            return None
        return ancestors | {real}

    @staticmethod
    def names(folder: Path, part: str) -> list[str]:
        try:
            entries = sorted(os.listdir(folder))
        except OSError:
            return []  # as glob does
        return [name for name in entries if not name.startswith(".") or part.startswith(".")]

    def match(self, folder: Path, rest: tuple[str, ...], ancestors: frozenset[Path]) -> None:
        part, tail = rest[0], rest[1:]
        if part == "**":
            self.match_any_depth(folder, rest, ancestors)
            return
        candidates = [n for n in self.names(folder, part) if fnmatch.fnmatch(n, part)] if glob.has_magic(part) else [part]
        for name in candidates:
            child = folder / name
            if not tail:
                if os.path.lexists(child):
                    self.found.append(child)
                continue
            inner = self.enter(child, ancestors)
            if inner is not None:
                self.match(child, tail, inner)

    def match_any_depth(self, folder: Path, rest: tuple[str, ...], ancestors: frozenset[Path]) -> None:
        """``**``: zero or more folders; hidden ones are not entered."""
        tail = rest[1:]
        if tail:
            self.match(folder, tail, ancestors)
        for name in self.names(folder, ""):
            child = folder / name
            if not tail:
                self.found.append(child)
            inner = self.enter(child, ancestors)
            if inner is not None:
                self.match(child, rest, inner)


def glob_inside(pattern: Path, roots: SourceRoots) -> tuple[list[Path], list[str]]:
    """The paths ``pattern`` matches, as ``glob.glob(recursive=True)`` finds them, expanded one
    folder at a time without entering one that resolves outside ``roots`` (a symlink or ``..``);
    and the entries left out because they lead outside."""
    parts = pattern.parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    walk = _GlobWalk(roots)
    start = walk.enter(Path(*parts[:first]), frozenset())
    if start is not None:
        walk.match(Path(*parts[:first]), parts[first:], start)
    kept = []
    for path in dict.fromkeys(walk.found):  # '**/**' finds a path twice, as glob does
        if inside(Path(os.path.realpath(path)), roots.folders):
            kept.append(path)
        else:
            walk.outside.append(str(path))
    return sorted(kept), list(dict.fromkeys(walk.outside))


def _descriptor_path(fd: int) -> str | None:
    """The real path of an open descriptor, from the kernel: None where it cannot say."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
    try:
        import fcntl

        getpath = getattr(fcntl, "F_GETPATH", None)  # macOS
        if getpath is not None:
            return os.fsdecode(fcntl.fcntl(fd, getpath, b"\0" * 1024).rstrip(b"\0"))
    except OSError:
        pass
    return None


def open_inside(path: Path, roots: SourceRoots) -> int:
    """A read-only descriptor of ``path`` when it lies inside ``roots``, else ``PermissionError``.

    The path is resolved and checked, opened without following a symlink swapped in since
    (``O_NOFOLLOW``), and the opened descriptor's own path is checked again, so a folder swapped
    for a symlink between the check and the open cannot lead out either.
    """
    refused = PermissionError(f"the file {OUTSIDE_ROOTS}, through a symlink or '..'; it was not read")
    real = os.path.realpath(path)
    if not inside(Path(real), roots.folders):
        raise refused
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last part became a symlink after the check
            raise refused from None
        raise
    try:
        opened = _descriptor_path(fd)
        if opened is None:
            same = os.fstat(fd)
            now = os.stat(real)
            opened = real if (same.st_dev, same.st_ino) == (now.st_dev, now.st_ino) else None
        if opened is None or not inside(Path(opened), roots.folders):
            raise refused
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device is never read
            raise ValueError("not a regular file; only files can be indexed")
    except BaseException:
        os.close(fd)
        raise
    return fd
