"""What binds a workflow run the HTTP API accepted: the folders it may read and whose inline sources it names.

The service sets both as the run's own parameters, never from the workflow, and the run binds them
into its ``index`` and ``flow`` steps, so that no step parameter reaches them. A ``flow`` step
passes them on to the deployment it starts, which is refused when its flow could read a source
without taking them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from citadel.documents import is_inline_name
from citadel.errors import ConfigurationError

# Flow parameters that only the service sets: a request naming one is refused, a sandboxed run overrides them.
SANDBOX_PARAMETERS = ("source_roots", "inline_owner")
# Parameters of a flow that reads or names a source: such a flow must take source_roots to be started sandboxed.
SOURCE_PARAMETERS = ("source", "source_name", "workflow")
DEFAULT_SOURCE_NAME = "inline"


def owned_source_name(name: str, owner: str) -> str:
    """The inline source ``name`` of the caller ``owner`` (an identity's subject, ``key:<id>`` or
    ``jwt:<sub>``): ``<owner>@<name>``, the owner percent-encoded but for ':'.

    The encoded owner holds no '@', '/' or '\\', so the first '@' ends it: two callers never share
    a name, and no name is a file source's (an absolute path). A path is returned as it is.
    """
    if not is_inline_name(name):
        return name
    return f"{quote(owner, safe=':')}@{name}"


@dataclass(frozen=True)
class Sandbox:
    """A sandboxed run's bounds: the ``roots`` it may read (none: no path at all) and the caller
    (``owner``) whose inline sources it names, when the service knows one."""

    roots: tuple[str, ...]
    owner: str | None = None

    @classmethod
    def of(cls, roots: Iterable[str] | None, owner: str | None = None) -> Sandbox | None:
        """The sandbox a run's parameters describe; None (not sandboxed) without roots, whatever the owner."""
        return None if roots is None else cls(tuple(str(root) for root in roots), owner)

    def source_name(self, name: str) -> str:
        """The source an ``index`` step's ``source_name`` files inline records under: the caller's own."""
        return owned_source_name(name, self.owner) if self.owner is not None else name

    def flow_parameters(self, deployment: str, parameters: Mapping[str, Any], accepted: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters a ``flow`` step starts ``deployment`` with under this sandbox.

        ``accepted`` maps the parameters its flow takes to their defaults. The sandbox's own
        parameters come from here, never from the step; a flow that could read or name a source
        but takes no ``source_roots`` is refused, and an inline ``source_name`` becomes the owner's.
        """
        given = sorted(name for name in SANDBOX_PARAMETERS if name in parameters)
        if given:
            raise ConfigurationError(
                f"deployment {deployment!r}: {', '.join(given)} is set by the service for a sandboxed run, "
                "never by a workflow; remove it from the step's parameters"
            )
        out = dict(parameters)
        if "source_roots" in accepted:
            out["source_roots"] = list(self.roots)
        elif any(name in accepted or name in parameters for name in SOURCE_PARAMETERS):
            raise ConfigurationError(
                f"deployment {deployment!r} takes a source but no source_roots, so it cannot be kept inside the "
                "folders this service may index (CITADEL_API_SOURCE_ROOTS); start it from the CLI, or take it off "
                "CITADEL_API_DEPLOYMENTS"
            )
        if self.owner is not None:
            if "inline_owner" in accepted:
                out["inline_owner"] = self.owner
            if "source_name" in accepted:
                default = accepted.get("source_name")
                name = out.get("source_name", default if isinstance(default, str) else DEFAULT_SOURCE_NAME)
                if isinstance(name, str):
                    out["source_name"] = self.source_name(name)
        return out
