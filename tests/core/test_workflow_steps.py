"""The step type registry: registration, duplicates, replacement, lookup and parameter models."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from citadel.workflows import (
    DuplicateStepType,
    StepContext,
    StepRegistry,
    UnknownStepType,
    default_registry,
    get_step_type,
    step_type,
    step_types,
)
from citadel.workflows.builtin import register_builtins

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

BUILTINS_ONLY = StepRegistry()
register_builtins(BUILTINS_ONLY)


class GreetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    times: int = Field(1, ge=1)


async def test_decorator_registers_and_runs_with_validated_params() -> None:
    """The decorated function becomes a step type that validates its parameters before running."""
    registry = StepRegistry()

    @step_type("greet", params=GreetParams, registry=registry)
    async def greet(params: GreetParams, ctx: StepContext) -> dict:
        """Greet someone a few times."""
        return {"text": " ".join([f"hello {params.name}"] * params.times), "at": f"{ctx.workflow_id}/{ctx.step_id}"}

    step = get_step_type("greet", registry)
    assert step.run is greet
    assert step.description == "Greet someone a few times."
    assert step.params is GreetParams
    assert step.json_schema()["required"] == ["name"]
    ctx = StepContext("wf", "s1", {"k": 1}, services=object())
    assert await step({"name": "ada", "times": 2}, ctx) == {"text": "hello ada hello ada", "at": "wf/s1"}
    assert await step(GreetParams(name="bob"), ctx) == {"text": "hello bob", "at": "wf/s1"}
    with pytest.raises(ValidationError):
        await step({"name": "ada", "times": 0}, ctx)
    with pytest.raises(ValidationError):
        await step({"nam": "ada"}, ctx)


def test_duplicate_names_raise_unless_replace() -> None:
    """A second registration of a name is refused; replace=True swaps the runner."""
    registry = StepRegistry()

    async def first(params: GreetParams, ctx: StepContext) -> str:
        return "first"

    async def second(params: GreetParams, ctx: StepContext) -> str:
        return "second"

    registry.register("greet", first, params=GreetParams, description="one")
    with pytest.raises(DuplicateStepType, match="'greet' is already registered; pass replace=True"):
        registry.register("greet", second, params=GreetParams)
    with pytest.raises(DuplicateStepType):
        registry.step_type("greet", params=GreetParams)(second)
    assert registry.get("greet").run is first
    registry.register("greet", second, params=GreetParams, replace=True)
    assert registry.get("greet").run is second
    assert registry.get("greet").description == ""  # second has no docstring and none was given
    assert len(registry) == 1 and "greet" in registry and [s.name for s in registry] == ["greet"]
    registry.unregister("greet")
    assert "greet" not in registry


def test_registration_checks_its_arguments() -> None:
    """Runners must be async functions and params a pydantic model class."""
    registry = StepRegistry()

    def not_async(params: GreetParams, ctx: StepContext) -> None:
        return None

    async def fine(params: GreetParams, ctx: StepContext) -> None:
        return None

    with pytest.raises(TypeError, match="must be an async function"):
        registry.register("x", not_async, params=GreetParams)
    with pytest.raises(TypeError, match="pydantic model class"):
        registry.register("x", fine, params=dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty name"):
        registry.register("", fine, params=GreetParams)
    assert len(registry) == 0


def test_unknown_type_names_the_known_ones() -> None:
    """Looking up a missing name lists what is registered."""
    with pytest.raises(UnknownStepType, match="unknown step type 'nope'; known types: chunk, embedding, flow, index, search"):
        get_step_type("nope", BUILTINS_ONLY)
    with pytest.raises(UnknownStepType, match="unknown step type 'nope'; known types: .*chunk, embedding"):
        get_step_type("nope")
    with pytest.raises(UnknownStepType, match="none registered"):
        StepRegistry().get("nope")


def test_builtins_are_registered_and_copies_are_independent() -> None:
    """The default registry lists the built-ins by name; a copy can change without touching it."""
    names = [s.name for s in step_types()]
    assert names == sorted(names)
    assert {"chunk", "embedding", "flow", "index", "search"} <= set(names)  # other layers may add more
    assert all(s.description for s in step_types(BUILTINS_ONLY))
    sandbox = default_registry.copy()

    async def run(params: GreetParams, ctx: StepContext) -> str:
        return "replaced"

    sandbox.register("flow", run, params=GreetParams, replace=True)
    assert sandbox.get("flow").run is run
    assert default_registry.get("flow").run is not run
    fresh = StepRegistry()
    register_builtins(fresh)
    register_builtins(fresh)  # idempotent: existing names stay
    assert fresh.names() == BUILTINS_ONLY.names() == ["chunk", "embedding", "flow", "index", "search"]


def test_builtin_parameter_models() -> None:
    """Built-in params refuse unknown keys, demand exactly one of text/texts and check shapes."""
    chunk = get_step_type("chunk").params
    assert chunk.model_validate({"text": "x"}).chunk_size is None
    for bad in ({}, {"text": "a", "texts": ["b"]}, {"text": "a", "size": 3}, {"texts": ["a"], "chunk_size": 10, "chunk_overlap": 10}):
        with pytest.raises(ValidationError):
            chunk.model_validate(bad)
    embedding = get_step_type("embedding").params
    assert embedding.model_validate({"texts": ["a"], "model": "m"}).embedder_config().model == "m"
    with pytest.raises(ValidationError, match="disagree"):
        embedding.model_validate({"text": "a", "model": "m", "embedder": {"model": "n"}})
    search = get_step_type("search").params
    with pytest.raises(ValidationError):
        search.model_validate({"query": "", "limit": 0})
    index = get_step_type("index").params
    assert index.model_validate({"source": [{"id": "1", "text": "t"}]}).prune is None
    with pytest.raises(ValidationError, match="not an empty string"):
        index.model_validate({"source": "  "})
    flow = get_step_type("flow").params
    assert flow.model_validate({"deployment": "index-corpus/nightly"}).parameters == {}
    for bad in ("index-corpus", "a/b/c", "/x", "a/ "):
        with pytest.raises(ValidationError, match="flow-name/deployment-name"):
            flow.model_validate({"deployment": bad})
    with pytest.raises(ValidationError):
        flow.model_validate({"deployment": "a/b", "timeout_seconds": 0})


def test_core_workflows_never_import_the_orchestration_layer() -> None:
    """Importing and validating workflows loads no Prefect, flows, tasks or blocks (nor the backends)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; import citadel.workflows as w; "
        "w.validate_workflow({'workflow_id': 'w', 'steps': [{'step_id': 'a', 'type': 'chunk', 'parameters': {'text': 'x'}}]}); "
        "heavy = ('prefect', 'flows', 'tasks', 'blocks', 'qdrant_client', 'sqlalchemy'); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy); "
        "print(bad)"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "[]"
