"""Which collections a workflow names, read from its data without running or validating it.

What a service shows a caller of a run it did not submit, and what its audit trail says a run
touches. A collection given as a reference, or used by a step whose collection cannot be read here
(a ``flow`` step's deployment, but for a workflow it passes on), is not known before the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The built-in step types that use the default collection when they name none.
COLLECTION_STEPS = ("index", "search")
_REFERENCE = "${"


@dataclass(frozen=True)
class NamedCollections:
    """The collections a workflow names literally, and whether it may use others (``unknown``)."""

    names: frozenset[str] = frozenset()
    unknown: bool = False

    def __or__(self, other: NamedCollections) -> NamedCollections:
        return NamedCollections(self.names | other.names, self.unknown or other.unknown)

    def describe(self) -> str:
        """The collections in a line (``?`` for those not known before the run), for logs and the audit trail."""
        shown = sorted(self.names) + (["?"] if self.unknown else [])
        return ", ".join(shown) or "none"


def _one(value: Any, default: str) -> NamedCollections:
    if value is None or value == "":
        return NamedCollections(frozenset({default}))
    if isinstance(value, str) and _REFERENCE not in value:
        return NamedCollections(frozenset({value}))
    return NamedCollections(unknown=True)


def _flow_step(params: Mapping[str, Any], default: str, depth: int) -> NamedCollections:
    inner = params.get("parameters")
    if not isinstance(inner, Mapping):
        return NamedCollections(unknown=True)
    workflow = inner.get("workflow")
    if isinstance(workflow, Mapping):
        return named_collections(workflow, default, depth + 1)
    if "collection" in inner and inner.get("collection"):
        return _one(inner.get("collection"), default)
    return NamedCollections(unknown=True)  # the deployment's own collection, or none: not known here


def named_collections(workflow: Any, default: str, depth: int = 0) -> NamedCollections:
    """The collections ``workflow`` (a definition as data) names: every ``index`` and ``search``
    step's (``default`` when it names none), any other step's ``collection``, and a ``flow`` step's
    (its deployment's ``collection``, or the workflow it passes on). Anything unreadable is unknown."""
    steps = workflow.get("steps") if isinstance(workflow, Mapping) else None
    if not isinstance(steps, list) or depth > 16:
        return NamedCollections(unknown=True)
    found = NamedCollections()
    for step in steps:
        if not isinstance(step, Mapping):
            continue
        params = step.get("parameters") or {}
        if not isinstance(params, Mapping):
            found |= NamedCollections(unknown=True)
        elif step.get("type") == "flow":
            found |= _flow_step(params, default, depth)
        elif step.get("type") in COLLECTION_STEPS or "collection" in params:
            found |= _one(params.get("collection"), default)
    return found
