"""Blue-green collections: a collection name that is a Qdrant alias over numbered versions.

``citadel index --blue-green`` builds the next version ``<name>__v<n>`` as a collection of its own
while every search keeps reading the live one through the alias ``<name>``. Once the new version
passes its check (as many points as the registry has chunks, and a search for one of its own
chunks finds it), one alias operation, atomic in Qdrant, makes it live. Older versions stay for
``citadel collection rollback`` until ``citadel collection prune`` deletes them.

Searches need nothing of this module: Qdrant resolves the alias. Writes do: an incremental run
of ``<name>`` indexes into its live version (:func:`live_collection`), and the registry keeps
each version's documents under the version's own name.

Every switch and rollback leaves a line in the audit trail (``collection.switched``,
``collection.rolled_back``; a version refused by its check too), naming who asked: ``cli:<user>``
from the command line, a caller's own name (such as ``flow-run:<id>``), or :data:`SYSTEM_ACTOR`.
"""

from __future__ import annotations

import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import sqlalchemy as sa

from citadel.audit import AuditLog
from citadel.collections import SEPARATOR, check_collection_name, version_number
from citadel.errors import ConfigurationError, VersionCheckFailed
from citadel.models import CollectionVersion, CollectionVersions, RunSummary, SwitchReport
from citadel.registry import Holder, RunLock, among, index_runs, lock_key, mark_crashed_runs
from citadel.resources import Resources
from citadel.settings import secret
from citadel.store import embedded_layout, server_layout

log = logging.getLogger(__name__)
SYSTEM_ACTOR = "citadel"
"""The audit trail's actor of a switch no person or run is named for."""


@asynccontextmanager
async def locked(resources: Resources, collection: str) -> AsyncIterator[None]:
    """One blue-green operation on ``collection`` at a time, across processes (a build from its
    choice of version to its switch, a switch, a rollback, a prune): two builds would otherwise
    pick the same version, and a prune could delete a version a build is filling."""

    def waiting(holder: Holder | None) -> None:
        log.warning("waiting for another blue-green operation on %s to finish%s", collection,
                    f" ({holder.describe()})" if holder else "")

    lock = RunLock(await resources.registry(), lock_key(f"blue-green\x00{collection}", ""), str(uuid.uuid4()))
    await lock.acquire(on_wait=waiting)
    lock.start_heartbeat()
    try:
        yield
    finally:
        await lock.release()


async def _refuse_if_running(resources: Resources, names: Sequence[str], doing: str) -> None:
    """A collection an index run is writing into must not be deleted under it."""
    if not names:
        return
    registry = await resources.registry()
    await mark_crashed_runs(registry)
    query = sa.select(index_runs.c.collection).where(index_runs.c.status == "running", among(index_runs.c.collection, names))
    async with registry.engine.connect() as conn:
        busy = sorted({row.collection for row in await conn.execute(query)})
    if busy:
        raise ConfigurationError(f"an index run is writing into {', '.join(busy)}; {doing} when it has finished")


def version_name(collection: str, number: int) -> str:
    """The name of version ``number`` of ``collection``."""
    return check_collection_name(f"{collection}{SEPARATOR}{number}")


async def layout(resources: Resources) -> tuple[set[str], dict[str, str]]:
    """The store's collections and aliases, read the cheap way while the store is not open: an
    unchanged run must not load an embedded store, nor import qdrant-client for a server."""
    settings = resources.settings
    if not resources.store_opened:
        if not settings.qdrant_url:
            return embedded_layout(settings.qdrant_path)
        found = await server_layout(settings.qdrant_url, secret(settings.qdrant_api_key))
        if found is not None:
            return found
    return await resources.store.layout()


async def live_collection(resources: Resources, collection: str) -> str:
    """The collection that writes to ``collection`` go to: the live version when it is an alias,
    else itself."""
    check_collection_name(collection)
    _, aliases = await layout(resources)
    return aliases.get(collection, collection)


ALIAS_TTL_S = 2.0
_recent: weakref.WeakKeyDictionary[Resources, tuple[float, dict[str, str]]] = weakref.WeakKeyDictionary()


async def serving(resources: Resources, collection: str) -> str:
    """:func:`live_collection` for a long-lived searcher (the API): the store's aliases are read at
    most every :data:`ALIAS_TTL_S` seconds. Searches themselves read through the alias in Qdrant;
    this only names the version whose registry rows (model, existence) the searcher checks."""
    now = time.monotonic()
    cached = _recent.get(resources)
    # A name the cached aliases lack is read again: it may be an alias made since (a blue-green
    # build's first switch), which a search right after it must find.
    if cached is None or now - cached[0] > ALIAS_TTL_S or collection not in cached[1]:
        cached = (now, (await layout(resources))[1])
        _recent[resources] = cached
    return cached[1].get(collection, collection)


async def versions(resources: Resources, collection: str) -> CollectionVersions:
    """The versions of ``collection``, oldest first, with their points and which one is live."""
    collections, aliases = await layout(resources)
    live = aliases.get(collection)
    found = sorted((n, name) for name in collections if (n := version_number(collection, name)) is not None)
    store = resources.store if found else None
    listed = [
        CollectionVersion(name=name, number=n, live=name == live, points=await store.count(name) if store else 0)
        for n, name in found
    ]
    return CollectionVersions(collection=collection, live=live, plain=collection in collections, versions=listed)


async def next_version(resources: Resources, collection: str) -> str:
    """The name the next blue-green build of ``collection`` writes to."""
    check_collection_name(collection)
    collections, aliases = await layout(resources)
    numbers = [n for name in collections if (n := version_number(collection, name)) is not None]
    if collection in aliases and version_number(collection, aliases[collection]) is None:
        raise ConfigurationError(
            f"{collection!r} is an alias of {aliases[collection]!r}, which is not one of its versions; "
            "Citadel manages only aliases over <name>__v<n> collections: pick another collection name"
        )
    return version_name(collection, max(numbers, default=0) + 1)


async def check_version(resources: Resources, name: str) -> tuple[int, int, bool]:
    """A built version's (points, registry chunks, sample found): a search for the text of one of
    its own chunks must find that chunk first."""
    store = resources.store
    points = await store.count(name)
    chunks = await (await resources.registry()).count_chunks(name)
    sample = await store.point_sample(name) if points else None
    found = False
    if sample is not None and isinstance(text := sample.payload.get("text"), str):
        vector = (await resources.cached_embedder.embed([text])).vectors[0]
        hits = await store.search(name, vector, limit=1)
        found = bool(hits) and hits[0].payload.get("text") == text
    return points, chunks, found


async def _audit(resources: Resources, actor: str, action: str, collection: str, detail: str, outcome: str = "ok") -> None:
    trail = AuditLog(await resources.registry())
    await trail.record(actor, action, target=f"collection:{collection}", outcome=outcome, detail=detail)


def _moved(report: SwitchReport, check: bool) -> str:
    """What a switch did, for its audit line."""
    before = report.previous or ("the plain collection" if report.replaced_plain else "nothing")
    checked = "" if check else "; check skipped"
    return f"{before} -> {report.live}; {report.points} points, {report.chunks} chunks{checked}"


async def switch(
    resources: Resources, collection: str, target: str, *, check: bool = True, actor: str = SYSTEM_ACTOR
) -> SwitchReport:
    """Make ``target`` (a version of ``collection``) live; with ``check``, only when it passes its check.
    Callers hold :func:`locked`, as do :func:`rollback` and :func:`prune`. The switch, or the
    check's refusal, is written to the audit trail as ``actor``'s.

    The first switch of a collection that was indexed without blue-green replaces that plain
    collection: its name must become the alias. Its vectors and registry rows are deleted, and a
    search in the moment between the delete and the alias finds no collection.
    """
    try:
        report = await _switch(resources, collection, target, check=check)
    except VersionCheckFailed as exc:
        await _audit(resources, actor, "collection.switched", collection, str(exc), outcome="refused")
        raise
    await _audit(resources, actor, "collection.switched", collection, _moved(report, check))
    return report


async def _switch(resources: Resources, collection: str, target: str, *, check: bool) -> SwitchReport:
    if version_number(collection, target) is None:
        raise ConfigurationError(f"{target!r} is not a version of {collection!r} (versions are named {collection}{SEPARATOR}<n>)")
    collections, aliases = await layout(resources)
    if target not in collections:
        raise ConfigurationError(f"version {target!r} does not exist; `citadel collection list {collection}` shows the versions")
    points, chunks, found = await check_version(resources, target)
    if check:
        problems = []
        if points != chunks:
            problems.append(f"it holds {points} points but the registry has {chunks} chunks")
        if points == 0:
            problems.append("it is empty")
        elif not found:
            problems.append("a search for one of its own chunks did not find it")
        if problems:
            reading = aliases.get(collection) or (collection if collection in collections else None)
            raise VersionCheckFailed(
                f"version {target!r} failed its check ({'; '.join(problems)}), so {collection!r} still reads "
                f"{repr(reading) if reading else 'nothing'}; fix the cause and run the build again"
            )
    previous = aliases.get(collection)
    replaced_plain = collection in collections
    if replaced_plain:
        await _refuse_if_running(resources, [collection], f"switch {collection} to {target}")
    await resources.store.point_alias(collection, target, replace_collection=replaced_plain)
    # No registry rows belong under an alias's name (those of a replaced plain collection, even
    # when an earlier switch stopped between its two steps).
    await (await resources.registry()).forget_collection(collection)
    return SwitchReport(
        collection=collection, live=target, previous=previous, replaced_plain=replaced_plain,
        points=points, chunks=chunks, sample_found=found,
    )


async def rollback(resources: Resources, collection: str, *, actor: str = SYSTEM_ACTOR) -> SwitchReport:
    """Make the newest version older than the live one live again (its check is skipped: it served
    before); written to the audit trail as ``actor``'s."""
    current = await versions(resources, collection)
    if current.live is None:
        raise ConfigurationError(
            f"{collection!r} has no blue-green versions; build one with `citadel index PATH --collection {collection} --blue-green`"
        )
    live_number = version_number(collection, current.live)
    if live_number is None:
        raise ConfigurationError(
            f"{collection!r} is an alias of {current.live!r}, which is not one of its versions: nothing to roll back to"
        )
    older = [v for v in current.versions if v.number < live_number]
    if not older:
        raise ConfigurationError(f"{current.live!r} is the oldest version of {collection!r} left: there is nothing to roll back to")
    report = await _switch(resources, collection, older[-1].name, check=False)
    await _audit(resources, actor, "collection.rolled_back", collection, _moved(report, check=True))
    return report


async def prune(resources: Resources, collection: str, keep: int = 1) -> list[str]:
    """Delete the versions of ``collection`` other than the live one and the ``keep`` newest below
    it (kept for rollback), with their registry rows; versions newer than the live one (after a
    rollback) are deleted too. Returns the names deleted."""
    current = await versions(resources, collection)
    if current.live is None:
        return []
    live_number = version_number(collection, current.live)
    if live_number is None:
        raise ConfigurationError(f"{collection!r} is an alias of {current.live!r}, which is not one of its versions: nothing to prune")
    older = [v.name for v in current.versions if v.number < live_number]
    newer = [v.name for v in current.versions if v.number > live_number]
    doomed = older[: max(len(older) - keep, 0)] + newer
    await _refuse_if_running(resources, doomed, f"prune {collection}")
    registry = await resources.registry()
    for name in doomed:
        await resources.store.delete_collection(name)
        await registry.forget_collection(name)
    return doomed


def not_switched(alias: str, summary: RunSummary) -> str:
    """Why a build with failed documents was kept but not switched to, and what to do."""
    return (f"{summary.failed} documents failed, so {alias} was not switched to {summary.collection}; fix them and run "
            f"the build again, or switch anyway with `citadel collection switch {alias} {summary.collection}`")
