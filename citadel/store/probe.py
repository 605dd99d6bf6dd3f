"""Cheap looks at a vector store without opening it: point count and whether given ids are there.

Opening Qdrant's embedded store loads every point into memory (about 20 s and 3.5 GB at 69k
points) and importing qdrant-client costs about a second, so the consistency check of an
unchanged run looks another way:

- a Qdrant server: two REST calls over httpx (``points/count`` exact, ``points`` by id);
- the embedded store: its own files, read-only (``meta.json`` for the collection, and the
  collection's SQLite file for the count and the sampled ids), as :mod:`citadel.store.embeddedlayout` knows them.

Either probe answers ``None`` when it cannot tell (an unexpected answer or file layout); the
caller then opens the store with its client, which is always right, only slower.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

import citadel.store.embeddedlayout as layout
from citadel.errors import ConfigurationError
from citadel.store.rest import COUNT_EXACT, alias_map, collection_names, collection_path, point_count, rest_options, result


@dataclass(frozen=True)
class StoreSnapshot:
    """What a store holds of one collection: whether it exists, its points, which sampled ids it has."""

    exists: bool
    points: int
    present: frozenset[str]
    how: str  # "file", "rest" or "client": how it was read


def _missing(how: str) -> StoreSnapshot:
    """A collection the store does not have."""
    return StoreSnapshot(False, 0, frozenset(), how)


async def probe_server(
    url: str, api_key: str | None, collection: str, sample: Sequence[str], timeout_s: float = 10
) -> StoreSnapshot | None:
    """Count the collection's points and look up ``sample`` over Qdrant's REST API."""
    base = url.rstrip("/") + collection_path(collection)
    try:
        async with httpx.AsyncClient(**rest_options(url, api_key, timeout_s)) as client:
            counted = await client.post(f"{base}/points/count", json=COUNT_EXACT)
            if counted.status_code == 404:
                return _missing("rest")
            counted.raise_for_status()
            points = point_count(counted.json())
            present: set[str] = set()
            if sample:
                found = await client.post(f"{base}/points", json={"ids": list(sample), "with_payload": False, "with_vector": False})
                found.raise_for_status()
                present = {str(record["id"]) for record in result(found.json())}
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None  # let the client say what is wrong
    return StoreSnapshot(True, points, frozenset(present), "rest")


def probe_embedded(path: Path, collection: str, sample: Sequence[str]) -> StoreSnapshot | None:
    """Read the embedded store's files (never its points' contents) for the count and the sample."""
    try:
        meta = layout.read_embedded_meta(path)
    except (OSError, ValueError):
        return None
    if meta is None or collection not in meta.collections:
        return _missing("file")
    storage = layout.embedded_storage_file(path, collection)
    if storage is None or not storage.is_file():
        return None
    try:
        conn = layout.open_read_only(storage, timeout_s=5)
        try:
            points = layout.count_rows(conn)
            keys = {layout.storage_key(pid): pid for pid in sample}
            present = {keys[key] for key in layout.present_keys(conn, list(keys))}
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return StoreSnapshot(True, points, frozenset(present), "file")


def embedded_store_holder(path: Path, *, others_only: bool = False) -> str | None:
    """Which other process holds the embedded store at ``path`` (one at a time), or None.

    Tries the store's own lock file the way qdrant-client takes it (an exclusive ``flock``) and
    lets go at once; names the holding process when ``/proc`` tells. This process holding it
    counts as free: its own client is shared. ``others_only`` looks past this process (which
    may keep the file open after failing to lock it).
    """
    lock_path = layout.lock_file(path)
    if not lock_path.exists():
        return None
    try:
        with open(lock_path, "r+") as handle:
            if not layout.try_lock(handle):
                pid, command = _process_holding(lock_path, own_fd=handle.fileno(), others_only=others_only)
                if pid == os.getpid():
                    return None
                if pid is None:
                    return "another process"
                return f"process {pid} ({command})" if command else f"process {pid}"
            layout.unlock(handle)
    except OSError:
        return None
    return None


def store_in_use(path: Path, holder: str) -> str:
    """The message for an embedded store held by ``holder``: who it is and what to do instead."""
    if re.search(r"(citadel|cli)\S* api\b", holder):
        advice = (
            "the Citadel API serves this data folder: send the work to it (POST /api/v1/orchestration/workflow, "
            "/api/v1/search), or point CITADEL_QDRANT_URL at a Qdrant server, which any number of processes can share"
        )
    else:
        advice = "wait for it to finish, or point CITADEL_QDRANT_URL at a Qdrant server, which any number of processes can share"
    return f"the embedded vector store at {path.resolve()} is in use by {holder}; {advice}"


def held_elsewhere(path: Path) -> ConfigurationError:
    """The error for an embedded store that another process holds (found when taking its lock)."""
    return ConfigurationError(store_in_use(path, embedded_store_holder(path, others_only=True) or "another process"))


def _process_holding(lock_path: Path, own_fd: int, others_only: bool = False) -> tuple[int | None, str]:
    """The pid and command line of a process with ``lock_path`` open, from /proc (this one first,
    not counting the probe's own ``own_fd``)."""
    target = str(lock_path.resolve())
    me = os.getpid()
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return None, ""
    pids.sort(key=lambda pid: pid != me)
    if others_only:
        pids.remove(me)
    for pid in pids:
        try:
            fds = [fd for fd in os.listdir(f"/proc/{pid}/fd") if not (pid == me and fd == str(own_fd))]
        except OSError:
            continue  # gone, or not ours to look at
        if any(_link(f"/proc/{pid}/fd/{fd}") == target for fd in fds):
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                raw = b""
            return pid, " ".join(raw.decode(errors="replace").replace("\0", " ").split())[:120]
    return None, ""


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:  # a descriptor closed since it was listed
        return None


async def server_layout(url: str, api_key: str | None, timeout_s: float = 10) -> tuple[set[str], dict[str, str]] | None:
    """A Qdrant server's collection names and aliases over its REST API (without qdrant-client)."""
    try:
        async with httpx.AsyncClient(**rest_options(url, api_key, timeout_s)) as client:
            listed = await client.get(f"{url.rstrip('/')}/collections")
            listed.raise_for_status()
            aliases = await client.get(f"{url.rstrip('/')}/aliases")
            aliases.raise_for_status()
            return set(collection_names(listed.json())), alias_map(aliases.json())
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None  # let the client say what is wrong


def embedded_layout(path: Path) -> tuple[set[str], dict[str, str]]:
    """An embedded store's collection names and aliases, from its own ``meta.json``, without opening it."""
    try:
        meta = layout.read_embedded_meta(path)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"the embedded vector store's {layout.meta_file(path)} is unreadable ({exc}); restore it from a backup"
        ) from exc
    return (set(), {}) if meta is None else (set(meta.collections), dict(meta.aliases))
