"""The registry of step types: a name, a pydantic parameters model and an async runner.

Definitions name step types by string; the registry turns a name into code and lets validation
check parameters before anything runs. The orchestration layer swaps runners with ``replace=True``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from citadel.workflows.errors import DuplicateStepType, UnknownStepType

P = TypeVar("P", bound=BaseModel)
Runner = Callable[[Any, "StepContext"], Awaitable[Any]]


@dataclass(frozen=True)
class StepContext:
    """What a runner knows besides its parameters: where it runs and the caller's services.

    ``services`` is whatever the caller supplies; the built-in steps use a
    :class:`citadel.resources.Resources` when given one and build their own otherwise.
    ``embedding_guard``, given the settings of the backend a step embeds with, returns an async
    context manager held while it embeds: the orchestration layer passes one that takes a slot of
    that backend's concurrency limit, so workflow steps queue for it like every other run.
    """

    workflow_id: str
    step_id: str
    context: dict[str, Any] = field(default_factory=dict)
    services: Any = None
    embedding_guard: Callable[[Any], AbstractAsyncContextManager[Any]] | None = None


@dataclass(frozen=True)
class StepType:
    """A registered step type."""

    name: str
    params: type[BaseModel]
    run: Runner
    description: str = ""
    outputs: tuple[str, ...] | None = None  # the keys of its output mapping; None when not declared
    cacheable: bool = False  # whether its output may be reused across runs (it changes no state)

    def parse(self, parameters: dict[str, Any]) -> BaseModel:
        """``parameters`` validated into the params model (pydantic's ValidationError otherwise)."""
        return self.params.model_validate(parameters)

    async def __call__(self, parameters: dict[str, Any] | BaseModel, ctx: StepContext) -> Any:
        """Validate (if not already a model) and run."""
        params = parameters if isinstance(parameters, self.params) else self.parse(dict(parameters))
        return await self.run(params, ctx)

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of the parameters, for documentation and API clients."""
        return self.params.model_json_schema()


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""


class StepRegistry:
    """Step types by name; one name, one type, unless a registration says ``replace=True``."""

    def __init__(self) -> None:
        self._types: dict[str, StepType] = {}

    def register(
        self,
        name: str,
        run: Runner,
        *,
        params: type[BaseModel],
        description: str | None = None,
        replace: bool = False,
        outputs: Sequence[str] | None = None,
        cacheable: bool = False,
    ) -> StepType:
        """Add (or with ``replace`` swap) the step type ``name``.

        ``outputs`` names the keys of the mapping the runner returns, so that validation can
        check ``${steps.<id>.output.<key>}`` references before anything runs. ``cacheable`` lets
        steps of this type declare ``cache``: only for types whose output depends on their
        inputs alone and that change no state.
        """
        if not name or not isinstance(name, str):
            raise ValueError("a step type needs a non-empty name")
        if not (isinstance(params, type) and issubclass(params, BaseModel)):
            raise TypeError(f"step type {name!r}: params must be a pydantic model class, got {params!r}")
        if not inspect.iscoroutinefunction(run):
            raise TypeError(f"step type {name!r}: the runner must be an async function (async def run(params, ctx))")
        if name in self._types and not replace:
            raise DuplicateStepType(
                f"step type {name!r} is already registered; pass replace=True to replace its runner"
            )
        declared = tuple(outputs) if outputs is not None else None
        step = StepType(name, params, run, description if description is not None else _first_line(run.__doc__), declared, cacheable)
        self._types[name] = step
        return step

    def step_type(
        self,
        name: str,
        *,
        params: type[P],
        description: str | None = None,
        replace: bool = False,
        outputs: Sequence[str] | None = None,
        cacheable: bool = False,
    ) -> Callable[[Callable[[P, StepContext], Awaitable[Any]]], Callable[[P, StepContext], Awaitable[Any]]]:
        """Decorator form of :meth:`register`; returns the function unchanged."""

        def decorate(run: Callable[[P, StepContext], Awaitable[Any]]) -> Callable[[P, StepContext], Awaitable[Any]]:
            self.register(name, run, params=params, description=description, replace=replace, outputs=outputs, cacheable=cacheable)
            return run

        return decorate

    def get(self, name: str) -> StepType:
        """The step type ``name``; :class:`UnknownStepType` lists the known ones."""
        try:
            return self._types[name]
        except KeyError:
            raise UnknownStepType(unknown_type_message(name, self.names())) from None

    def unregister(self, name: str) -> None:
        self._types.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._types)

    def types(self) -> list[StepType]:
        return [self._types[name] for name in self.names()]

    def copy(self) -> StepRegistry:
        """An independent registry with the same step types (tests, sandboxes)."""
        other = StepRegistry()
        other._types = dict(self._types)
        return other

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[StepType]:
        return iter(self.types())

    def __len__(self) -> int:
        return len(self._types)


default_registry = StepRegistry()


def unknown_type_message(name: str, known: Sequence[str]) -> str:
    """Why a step type is unknown, with the known ones and how custom ones are loaded."""
    return (
        f"unknown step type {name!r}; known types: {', '.join(known) or 'none registered'}. "
        "Custom step types are registered by Python modules named in CITADEL_STEP_MODULES "
        "(e.g. CITADEL_STEP_MODULES=examples.custom_step), wherever workflows are validated or run"
    )


def step_type(
    name: str,
    *,
    params: type[P],
    description: str | None = None,
    replace: bool = False,
    outputs: Sequence[str] | None = None,
    cacheable: bool = False,
    registry: StepRegistry | None = None,
) -> Callable[[Callable[[P, StepContext], Awaitable[Any]]], Callable[[P, StepContext], Awaitable[Any]]]:
    """Register the decorated ``async def run(params, ctx)`` as step type ``name`` (``outputs``:
    the keys of the mapping it returns, checked by validation; ``cacheable``: its output may be
    reused across runs)."""
    return (registry if registry is not None else default_registry).step_type(
        name, params=params, description=description, replace=replace, outputs=outputs, cacheable=cacheable
    )


def get_step_type(name: str, registry: StepRegistry | None = None) -> StepType:
    """The registered step type ``name``."""
    return (registry if registry is not None else default_registry).get(name)


def step_types(registry: StepRegistry | None = None) -> list[StepType]:
    """Every registered step type, by name."""
    return (registry if registry is not None else default_registry).types()


def load_step_modules(modules: list[str]) -> None:
    """Import the modules that register step types (``CITADEL_STEP_MODULES``); a missing one is a clear error."""
    import importlib
    import os
    import sys

    from citadel.errors import ConfigurationError

    if modules and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` would: step modules may live in the project folder
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(
                f"cannot import step module {name!r} from CITADEL_STEP_MODULES: {exc}; "
                "is it on the Python path of this process (and of every worker)?"
            ) from exc
