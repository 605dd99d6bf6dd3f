"""A workflow step's output in a line a person reads: counts, dimensions, the first hits, never raw
vectors (an embed step's output is thousands of numbers; an artifact or a report shows its shape)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from citadel.words import plural

LIMIT = 160
"""At most this many characters, cut at a word, never mid-word."""
FIRST_HITS = 3
COUNTS = ("added", "updated", "unchanged", "deleted", "failed", "skipped", "chunks_embedded")


def shorten(text: str, limit: int = LIMIT) -> str:
    """``text`` on one line, at most ``limit`` characters, cut at the last space with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;") + "…"


def _vectors(output: Mapping[str, Any]) -> str:
    vectors = output.get("vectors") or []
    dimensions = output.get("dimensions") or (len(vectors[0]) if vectors and isinstance(vectors[0], list) else 0)
    text = f"{plural(len(vectors), 'vector')} of {dimensions} dimensions"
    if output.get("model"):
        text += f" ({output['model']})"
    if isinstance(output.get("cache_hits"), int):
        text += f", {output['cache_hits']} from the cache"
    return text


def _hits(output: Mapping[str, Any]) -> str:
    hits = [hit for hit in output.get("hits") or [] if isinstance(hit, Mapping)]
    first = ", ".join(
        f"{hit.get('title') or hit.get('document_id') or hit.get('id')} ({float(hit.get('score') or 0):.3f})" for hit in hits[:FIRST_HITS]
    )
    text = plural(len(hits), "hit")
    if output.get("mode"):
        text += f" ({output['mode']})"
    return f"{text}: {first}" if first else text


def _counts(output: Mapping[str, Any]) -> str:
    parts = [f"{output[key]} {key.replace('_', ' ')}" for key in COUNTS if isinstance(output.get(key), int)]
    collection = output.get("collection")
    return (f"{collection}: " if collection else "") + ", ".join(parts)


def _chunks(output: Mapping[str, Any]) -> str:
    return plural(len(output.get("chunks") or []), "chunk")


def _mapping(output: Mapping[str, Any]) -> str:
    if isinstance(output.get("vectors"), list):
        return _vectors(output)
    if isinstance(output.get("hits"), list):
        return _hits(output)
    if any(isinstance(output.get(key), int) for key in COUNTS[:4]):
        return _counts(output)
    if isinstance(output.get("chunks"), list):
        return _chunks(output)
    parts = []
    for key, value in output.items():
        if isinstance(value, list):
            parts.append(f"{key}: {plural(len(value), 'item')}")
        elif isinstance(value, Mapping):
            parts.append(f"{key}: {{{len(value)} keys}}")
        else:
            parts.append(f"{key}: {value}")
    return ", ".join(parts)


def summarize_output(output: Any, limit: int = LIMIT) -> str:
    """A step's output as one line of at most ``limit`` characters (empty for no output)."""
    if output is None:
        return ""
    if isinstance(output, Mapping):
        text = _mapping(output)
    elif isinstance(output, list):
        text = plural(len(output), "item")
    elif isinstance(output, str):
        text = output
    else:
        text = json.dumps(output, default=str)
    return shorten(text, limit)
