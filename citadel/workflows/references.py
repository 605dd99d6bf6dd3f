"""``${steps.<id>.output.<path>}`` and ``${context.<path>}`` references inside step parameters.

A string that is exactly one reference becomes the referenced value with its own type (a list of
chunks stays a list); a reference inside longer text is interpolated as text. Paths are dotted and
may index lists (``chunks.0.text``). Other ``${...}`` text (``${HOME}``) is left alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from citadel.workflows.errors import UnresolvedReference

_TOKEN = re.compile(r"\$\{([^{}]*)\}")
# Step ids may contain dots, so the id is the shortest prefix followed by ``.output``.
_STEP = re.compile(r"steps\.([A-Za-z0-9_.-]+?)\.output(?:\.(.+))?")
_CONTEXT = re.compile(r"context\.(.+)")
_SEGMENT = re.compile(r"[^.\s]+")
_OPENING = re.compile(r"\$\{\s*(?:steps|context)\b")

Where = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Reference:
    """One well-formed reference and where it sits inside the walked value (``("texts", 0)``)."""

    text: str
    source: Literal["steps", "context"]
    step_id: str | None
    path: tuple[str, ...]
    where: Where = ()
    whole: bool = False

    @property
    def dotted(self) -> str:
        """The reference without ``${}``, e.g. ``steps.chunk.output.texts``."""
        return self.text[2:-1]


@dataclass(frozen=True, slots=True)
class MalformedReference:
    """A ``${steps...}`` or ``${context...}`` token that does not parse, and why."""

    text: str
    reason: str
    where: Where = ()


def _split_path(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return ()
    parts = tuple(raw.split("."))
    return parts if all(_SEGMENT.fullmatch(part) for part in parts) else None


def _parse(token: str, body: str, where: Where, whole: bool) -> Reference | MalformedReference | None:
    """The reference ``${body}``, a malformed one, or None for ``${...}`` text that is no reference."""
    body = body.strip()
    head = body.split(".", 1)[0]
    if head not in ("steps", "context"):
        return None
    step = _STEP.fullmatch(body)
    if step:
        path = _split_path(step.group(2))
        if path is not None:
            return Reference(token, "steps", step.group(1), path, where, whole)
        return MalformedReference(token, "the output path has an empty or blank segment", where)
    context = _CONTEXT.fullmatch(body)
    if context:
        path = _split_path(context.group(1))
        if path:
            return Reference(token, "context", None, path, where, whole)
        return MalformedReference(token, "the context path has an empty or blank segment", where)
    if head == "steps":
        return MalformedReference(token, "expected ${steps.<step_id>.output} or ${steps.<step_id>.output.<path>}", where)
    return MalformedReference(token, "expected ${context.<key>} or ${context.<key>.<path>}", where)


def _unterminated(text: str, where: Where, closed: list[tuple[int, int]]) -> list[MalformedReference]:
    """``${steps...`` or ``${context...`` openings without their ``}``: errors, not literal text."""
    found: list[MalformedReference] = []
    for match in _OPENING.finditer(text):
        if not any(start <= match.start() < end for start, end in closed):
            rest = text[match.start():]
            shown = rest if len(rest) <= 60 else rest[:57] + "..."
            found.append(MalformedReference(shown, "unterminated reference: the closing '}' is missing", where))
    return found


def _scan(value: Any, where: Where = ()) -> list[Reference | MalformedReference]:
    if isinstance(value, str):
        found: list[Reference | MalformedReference] = []
        closed: list[tuple[int, int]] = []
        for match in _TOKEN.finditer(value):
            closed.append(match.span())
            parsed = _parse(match.group(0), match.group(1), where, match.group(0) == value)
            if parsed is not None:
                found.append(parsed)
        if "${" in value:
            found.extend(_unterminated(value, where, closed))
        return found
    if isinstance(value, Mapping):
        return [ref for key, item in value.items() for ref in _scan(item, (*where, str(key)))]
    if isinstance(value, (list, tuple)):
        return [ref for index, item in enumerate(value) for ref in _scan(item, (*where, index))]
    return []


def find_references(value: Any) -> list[Reference]:
    """Every well-formed reference in ``value``, walking nested dicts and lists in order."""
    return [ref for ref in _scan(value) if isinstance(ref, Reference)]


def find_malformed(value: Any) -> list[MalformedReference]:
    """Every ``${steps...}``/``${context...}`` token in ``value`` that is not a valid reference."""
    return [ref for ref in _scan(value) if isinstance(ref, MalformedReference)]


def referenced_steps(value: Any) -> set[str]:
    """Ids of the steps whose outputs ``value`` references."""
    return {ref.step_id for ref in find_references(value) if ref.step_id is not None}


def is_reference(value: Any) -> bool:
    """True when ``value`` is a string that is exactly one reference."""
    if not isinstance(value, str):
        return False
    refs = _scan(value)
    return len(refs) == 1 and isinstance(refs[0], Reference) and refs[0].whole


def contains_reference(value: Any) -> bool:
    """True when ``value`` holds a reference anywhere (a string or nested in dicts and lists)."""
    return bool(find_references(value))


def lookup(root: Any, path: Sequence[str], label: str, reference: str) -> Any:
    """Follow dotted ``path`` from ``root`` (``label`` names root in errors); digits index lists."""
    current = root
    for segment in path:
        if isinstance(current, Mapping):
            if segment not in current:
                keys = ", ".join(map(str, list(current)[:20])) or "none"
                raise UnresolvedReference(reference, f"{label} has no key {segment!r} (keys: {keys})")
            current = current[segment]
        elif isinstance(current, Sequence) and not isinstance(current, (str, bytes)):
            if not segment.isdigit():
                raise UnresolvedReference(reference, f"{label} is a list; {segment!r} is not an index")
            index = int(segment)
            if index >= len(current):
                raise UnresolvedReference(reference, f"{label} has no index {index} (length {len(current)})")
            current = current[index]
        else:
            raise UnresolvedReference(reference, f"{label} is {type(current).__name__}, not a mapping or list: it has no {segment!r}")
        label = f"{label}.{segment}"
    return current


def value_of(ref: Reference, outputs: Mapping[str, Any], context: Mapping[str, Any]) -> Any:
    """The value ``ref`` points at; :class:`UnresolvedReference` names the missing part."""
    if ref.source == "context":
        return lookup(context, ref.path, "context", ref.text)
    assert ref.step_id is not None
    if ref.step_id not in outputs:
        raise UnresolvedReference(ref.text, f"no output of step {ref.step_id!r} (unknown step, or it has not run)")
    return lookup(outputs[ref.step_id], ref.path, f"steps.{ref.step_id}.output", ref.text)


def as_text(value: Any) -> str:
    """How a referenced value reads inside a longer string: strings as is, the rest as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _resolve_text(text: str, outputs: Mapping[str, Any], context: Mapping[str, Any]) -> Any:
    found = _scan(text)
    if not found:
        return text
    for ref in found:
        if isinstance(ref, MalformedReference):
            raise UnresolvedReference(ref.text, f"malformed reference: {ref.reason}")
    only = found[0]
    if len(found) == 1 and isinstance(only, Reference) and only.whole:
        return value_of(only, outputs, context)

    def substitute(match: re.Match[str]) -> str:
        parsed = _parse(match.group(0), match.group(1), (), False)
        if not isinstance(parsed, Reference):
            return match.group(0)
        return as_text(value_of(parsed, outputs, context))

    return _TOKEN.sub(substitute, text)


def resolve(value: Any, outputs: Mapping[str, Any], context: Mapping[str, Any]) -> Any:
    """``value`` with every reference replaced: typed for a whole-string reference, text otherwise.

    ``outputs`` maps step ids to their outputs. Dicts and lists are copied, never changed in place.
    """
    if isinstance(value, str):
        return _resolve_text(value, outputs, context)
    if isinstance(value, Mapping):
        return {key: resolve(item, outputs, context) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, outputs, context) for item in value]
    if isinstance(value, tuple):
        return tuple(resolve(item, outputs, context) for item in value)
    return value
