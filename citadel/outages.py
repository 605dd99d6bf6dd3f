"""Which dependency a failure lost: a lost connection to the registry, Redis or the vector store is
named as such (the HTTP API answers 503 naming it, a command says the registry was lost), instead
of surfacing as whatever error the last statement happened to raise."""

from __future__ import annotations

import socket
import traceback
from collections.abc import Iterator

import sqlalchemy.exc

# By the top-level package of the code that raised the failure.
DEPENDENCIES = {
    "asyncpg": "the registry (Postgres)", "aiosqlite": "the registry (SQLite)", "sqlalchemy": "the registry",
    "redis": "Redis", "qdrant_client": "the vector store (Qdrant)",
}
REGISTRY = ("asyncpg", "aiosqlite", "sqlalchemy")


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _package(obj: object) -> str:
    return type(obj).__module__.split(".", 1)[0]


def is_connection_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a connection refused, reset, closed or timed out (not an error a server answered)."""
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc, (sqlalchemy.exc.InterfaceError, sqlalchemy.exc.OperationalError))
    name = type(exc).__name__
    return _package(exc) in DEPENDENCIES and ("Connection" in name or "Timeout" in name)


def _lost_package(exc: BaseException) -> str | None:
    for error in chain(exc):
        if not is_connection_failure(error):
            continue
        packages = [str(frame.f_globals.get("__name__", "")).split(".", 1)[0] for frame, _ in traceback.walk_tb(error.__traceback__)]
        packages.append(_package(error))
        if isinstance(error, sqlalchemy.exc.DBAPIError):
            packages.append(_package(error.orig))
        for package in reversed(packages):  # the deepest names it, a driver rather than the ORM above it
            if package in DEPENDENCIES and package != "sqlalchemy":
                return package
        if "sqlalchemy" in packages:
            return "sqlalchemy"
    return None


def lost_dependency(exc: BaseException) -> str | None:
    """The dependency whose lost connection raised ``exc`` ("the registry (Postgres)", "Redis", ...),
    or None when ``exc`` is no lost connection of a dependency."""
    package = _lost_package(exc)
    return DEPENDENCIES[package] if package else None


def registry_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is the registry's connection lost (refused, reset, closed)."""
    return _lost_package(exc) in REGISTRY


def cause(exc: BaseException) -> str:
    """The first lost connection in ``exc``'s chain, in one line: what a user needs to see first."""
    first = next((error for error in chain(exc) if is_connection_failure(error)), exc)
    if isinstance(first, sqlalchemy.exc.DBAPIError) and first.orig is not None:
        first = first.orig
    text = " ".join(str(first).split())
    return f"{type(first).__name__}: {text}" if text else type(first).__name__
