"""Bounds on how deeply JSON and YAML input may nest, and how far YAML aliases may expand it.

Parsers, validators and serialisers walk nested values recursively, so input nested hundreds of
levels deep ends in a RecursionError somewhere inside; an alias bomb of a few hundred bytes
expands to gigabytes once something walks it. Both are refused where input enters (a request
body, a workflow file), before anything parses or walks it, so nothing further in needs a guard.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable
from itertools import accumulate, count
from typing import Any

# What CITADEL_MAX_NESTING_DEPTH defaults to and may be raised to: real workflows and bodies
# nest a dozen levels at most, and everything past the edge stays far from Python's recursion
# limit (and from orjson's, 254, which Prefect serialises parameters with).
DEFAULT_MAX_DEPTH = 64
MAX_DEPTH_CEILING = 128

# Nodes that YAML aliases may add to a document in total, counted as their expansion: shared
# defaults (`<<: *defaults`) stay far below it, a bomb of nine levels of nine reaches it at once.
MAX_ALIAS_NODES = 100_000

# A string up to its closing quote, or to the end of a text where it is left open (the text
# stops being JSON there, so what follows cannot nest the parser any deeper). Atomic, so that
# every quote starts a match that succeeds: one pass, linear in the text whatever it holds.
_STRING = re.compile(rb'"(?>(?:[^"\\]+|\\.)*)"?', re.DOTALL)
# Openings become 2 and closings 0, everything else is dropped: the depth after k brackets is
# then the sum of the first k minus k, computed in C with no Python-level step per byte.
_BRACKETS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")


class NestingError(ValueError):
    """Input nested or expanded past a bound; the message says which bound and how to stay within it."""


def json_depth_exceeds(text: str | bytes, limit: int) -> bool:
    """Whether the JSON ``text`` opens more than ``limit`` arrays and objects inside each other.

    Scanned without parsing (brackets inside strings do not count), in linear time; a text that
    is not JSON is never called too deep for the brackets after the point where it stops being
    JSON, so the parser that reads it next fails on it before nesting any deeper."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # the usual case: not enough brackets in all to nest that deep
    brackets = _STRING.sub(b"", data).translate(_BRACKETS, _NOT_BRACKETS)
    return max(map(operator.sub, accumulate(brackets), count(1)), default=0) > limit


def check_json_depth(text: str, limit: int, what: str) -> None:
    """A :class:`NestingError` naming ``what`` when the JSON ``text`` nests deeper than ``limit``."""
    if json_depth_exceeds(text, limit):
        raise NestingError(too_deep(what, limit))


def too_deep(what: str, limit: int) -> str:
    return f"{what} nests deeper than {limit} levels (CITADEL_MAX_NESTING_DEPTH); nest arrays and objects less deeply"


def check_yaml_events(events: Iterable[Any], limit: int, what: str, max_alias_nodes: int = MAX_ALIAS_NODES) -> None:
    """A :class:`NestingError` when the YAML ``events`` (from ``yaml.parse``) nest deeper than
    ``limit``, with every alias counted as the node it repeats, or when their aliases expand to
    more than ``max_alias_nodes`` nodes in all. Stops at the first event past a bound, so a bomb
    is refused after reading a few of its lines and never expanded."""
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, levels of collections) of its node
    open_: list[list[Any]] = []  # per open collection: [anchor, nodes, levels]
    aliased = 0
    for event in events:
        kind = type(event).__name__
        if kind in ("MappingStartEvent", "SequenceStartEvent"):
            if len(open_) >= limit:
                raise NestingError(too_deep(what, limit))
            open_.append([event.anchor, 1, 1])
            continue
        if kind == "AliasEvent":
            nodes, levels = sizes.get(event.anchor, (1, 0))  # an unknown anchor: the loader says so
            aliased += nodes
            if aliased > max_alias_nodes:
                raise NestingError(
                    f"{what} expands its YAML aliases (*name) to more than {max_alias_nodes} nodes; write the repeated values out"
                )
            if len(open_) + levels > limit:
                raise NestingError(too_deep(what, limit) + ", counting what its YAML aliases repeat")
        elif kind == "ScalarEvent":
            nodes, levels = 1, 0
            if event.anchor:
                sizes[event.anchor] = (nodes, levels)
        elif kind in ("MappingEndEvent", "SequenceEndEvent") and open_:
            anchor, nodes, levels = open_.pop()
            if anchor:
                sizes[anchor] = (nodes, levels)
        else:
            continue  # stream and document boundaries
        if open_:
            parent = open_[-1]
            parent[1] += nodes
            parent[2] = max(parent[2], levels + 1)


def value_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether the parsed ``value`` holds lists and dicts more than ``limit`` levels inside each
    other; walked without recursion, so any depth that a parser produced can be checked."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
