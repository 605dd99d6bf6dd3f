"""A list of ids bound as one parameter: ``= ANY($1)`` and ``NOT IN (SELECT unnest($1))`` on
Postgres, ``[NOT] IN (SELECT value FROM json_each(?))`` on SQLite, so a query has one statement
text whatever the list's length.

An expanded ``IN (...)`` is a new text for every length: each is parsed and prepared anew, and the
drivers keep the prepared ones (asyncpg's cache, pysqlite's) with every parameter's description. A
first index of 30,000 documents committed each batch with its own length, and held some 560,000
more Python objects at its peak that way."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal


class _IdArray(sa.types.TypeDecorator[list[str]]):
    """A list of strings: a text array on Postgres, a JSON array in text elsewhere."""

    impl = sa.String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(sa.String))
        return dialect.type_descriptor(sa.String())

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return value
        return json.dumps(value)


class _AmongIds(ColumnElement[bool]):
    """``column`` among (or, negated, not among) the ids of one bound list."""

    type = sa.Boolean()
    inherit_cache = True
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("ids", InternalTraversal.dp_clauseelement),
        ("negated", InternalTraversal.dp_boolean),
    ]

    def __init__(self, column: ColumnElement[Any], ids: BindParameter[list[str]], negated: bool) -> None:
        self.column, self.ids, self.negated = column, ids, negated


def among(column: ColumnElement[Any], ids: Iterable[str]) -> ColumnElement[bool]:
    """``column IN ids``, with the ids in one parameter."""
    return _AmongIds(column, _bound(ids), negated=False)


def not_among(column: ColumnElement[Any], ids: Iterable[str]) -> ColumnElement[bool]:
    """``column NOT IN ids``, with the ids in one parameter (true for no ids)."""
    return _AmongIds(column, _bound(ids), negated=True)


def _bound(ids: Iterable[str]) -> BindParameter[list[str]]:
    return sa.bindparam(None, list(ids), type_=_IdArray(), unique=True)


@compiles(_AmongIds, "postgresql")
def _postgres(element: _AmongIds, compiler: SQLCompiler, **kw: Any) -> str:
    column, ids = compiler.process(element.column, **kw), compiler.process(element.ids, **kw)
    # NOT IN a subquery is hashed once per statement; `!= ALL` of a parameter is not, once Postgres
    # switches to a generic plan (the sixth run), and compares each row with every id.
    return f"({column} NOT IN (SELECT unnest({ids})))" if element.negated else f"({column} = ANY ({ids}))"


@compiles(_AmongIds)
def _json_each(element: _AmongIds, compiler: SQLCompiler, **kw: Any) -> str:
    column, ids = compiler.process(element.column, **kw), compiler.process(element.ids, **kw)
    return f"({column} {'NOT IN' if element.negated else 'IN'} (SELECT value FROM json_each({ids})))"
