"""What binds a workflow run the HTTP API accepted: the folders it may read, whose inline sources it
names, and the collections it may use.

The service sets all three as the run's own parameters, never from the workflow, and the run binds
them into its steps, so that no step parameter reaches them: ``index`` reads inside the roots, every
step type that takes a collection checks the one it resolved (references followed, the default
applied) before it touches the store, and a ``flow`` step passes the bounds on to the deployment it
starts, which is refused when its flow could escape them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel

from citadel.documents import is_inline_name
from citadel.errors import ConfigurationError
from citadel.grants import Grants
from citadel.settings import Settings
from citadel.workflows.steps import Runner, StepContext, StepRegistry

# Flow parameters that only the service sets: a request naming one is refused, a sandboxed run overrides them.
SANDBOX_PARAMETERS = ("source_roots", "inline_owner", "collection_grants")
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


def takes_collection(params: type[BaseModel]) -> bool:
    """Whether a step type's parameters name a collection (``index``, ``search``, a custom one's)."""
    return "collection" in params.model_fields


def step_collection(params: BaseModel, ctx: StepContext) -> str:
    """The collection a step of such a type uses: its own, else the configured default, as the
    built-in steps choose it (an empty name is no name)."""
    own = getattr(params, "collection", None)
    if isinstance(own, str) and own:
        return own
    settings = getattr(ctx.services, "settings", None)
    return (settings if isinstance(settings, Settings) else Settings()).collection


@dataclass(frozen=True)
class Sandbox:
    """A sandboxed run's bounds: the ``roots`` it may read (none: no path at all; None: not bound),
    the caller (``owner``) whose inline sources it names, when the service knows one, and the
    ``collections`` (patterns, as :class:`citadel.grants.Grants` reads them) it may use (None: every one)."""

    roots: tuple[str, ...] | None
    owner: str | None = None
    collections: tuple[str, ...] | None = None

    @classmethod
    def of(
        cls, roots: Iterable[str] | None, owner: str | None = None, collections: Iterable[str] | None = None
    ) -> Sandbox | None:
        """The sandbox a run's parameters describe; None (not sandboxed) without roots or collections, whatever the owner."""
        if roots is None and collections is None:
            return None
        return cls(
            None if roots is None else tuple(str(root) for root in roots),
            owner,
            None if collections is None else tuple(str(pattern) for pattern in collections),
        )

    def source_name(self, name: str) -> str:
        """The source an ``index`` step's ``source_name`` files inline records under: the caller's own."""
        return owned_source_name(name, self.owner) if self.owner is not None else name

    def reaches(self, collection: str) -> bool:
        """Whether the run may use ``collection`` (a blue-green version through its collection)."""
        return self.collections is None or Grants(collections=self.collections).reaches(collection)

    def check_collection(self, step_id: str, collection: str) -> None:
        """A ConfigurationError (never retried) when step ``step_id`` would use a collection outside
        the run's; it says nothing of whether that collection exists."""
        if not self.reaches(collection):
            raise ConfigurationError(
                f"step {step_id!r}: collection {collection!r} is outside the collections the caller who submitted "
                "this run may reach; nothing was read or written"
            )

    def bind(self, registry: StepRegistry) -> StepRegistry:
        """``registry`` with every step type that takes a collection checking the one it resolved
        first (a copy; ``registry`` itself when every collection is allowed)."""
        if self.collections is None:
            return registry
        bound = registry.copy()
        for step in registry:
            if takes_collection(step.params):
                bound.register(
                    step.name, _guarded(step.run, self), params=step.params, description=step.description,
                    outputs=step.outputs, cacheable=step.cacheable, replace=True,
                )
        return bound

    def flow_parameters(self, deployment: str, parameters: Mapping[str, Any], accepted: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters a ``flow`` step starts ``deployment`` with under this sandbox.

        ``accepted`` maps the parameters its flow takes to their defaults. The sandbox's own
        parameters come from here, never from the step; a flow that could read or name a source
        but takes no ``source_roots`` is refused, as one that names a collection this run may not
        use, and an inline ``source_name`` becomes the owner's.
        """
        given = sorted(name for name in SANDBOX_PARAMETERS if name in parameters)
        if given:
            raise ConfigurationError(
                f"deployment {deployment!r}: {', '.join(given)} is set by the service for a sandboxed run, "
                "never by a workflow; remove it from the step's parameters"
            )
        out = dict(parameters)
        if self.roots is not None:
            if "source_roots" in accepted:
                out["source_roots"] = list(self.roots)
            elif any(name in accepted or name in parameters for name in SOURCE_PARAMETERS):
                raise ConfigurationError(
                    f"deployment {deployment!r} takes a source but no source_roots, so it cannot be kept inside the "
                    "folders this service may index (CITADEL_API_SOURCE_ROOTS); start it from the CLI, or take it off "
                    "CITADEL_API_DEPLOYMENTS"
                )
        out.update(self._collection_parameters(deployment, out, accepted))
        if self.owner is not None:
            if "inline_owner" in accepted:
                out["inline_owner"] = self.owner
            if "source_name" in accepted:
                default = accepted.get("source_name")
                name = out.get("source_name", default if isinstance(default, str) else DEFAULT_SOURCE_NAME)
                if isinstance(name, str):
                    out["source_name"] = self.source_name(name)
        return out

    def _collection_parameters(self, deployment: str, parameters: Mapping[str, Any], accepted: Mapping[str, Any]) -> dict[str, Any]:
        """What a deployment is started with to keep it inside the run's collections: the patterns,
        when its flow takes them; else its collection (given, or the deployment's own) checked here."""
        if self.collections is None:
            return {}
        if "collection_grants" in accepted:
            return {"collection_grants": list(self.collections)}
        if "workflow" in accepted or "workflow" in parameters:
            raise ConfigurationError(
                f"deployment {deployment!r} runs a workflow but takes no collection_grants, so it cannot be kept "
                "inside the collections this run may reach; take it off CITADEL_API_DEPLOYMENTS"
            )
        if "collection" in accepted or "collection" in parameters:
            collection = parameters.get("collection", accepted.get("collection"))
            if not isinstance(collection, str) or not collection or not self.reaches(collection):
                raise ConfigurationError(
                    f"deployment {deployment!r}: its collection {collection!r} is outside the collections this run "
                    "may reach (name one of them in the step's parameters)"
                )
        return {}


def _guarded(run: Runner, sandbox: Sandbox) -> Runner:
    """``run`` behind the sandbox's collection check (its source stays the step's, for the cache key)."""

    @functools.wraps(run)
    async def guarded(params: Any, ctx: StepContext) -> Any:
        sandbox.check_collection(ctx.step_id, step_collection(params, ctx))
        return await run(params, ctx)

    return guarded
