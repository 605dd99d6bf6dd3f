"""Validation: random graphs are accepted exactly when acyclic and well referenced, every problem
is reported at once with its location, and the run order respects every dependency."""

from __future__ import annotations

import asyncio
import re
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from citadel.workflows import (
    Problem,
    StepContext,
    StepRegistry,
    WorkflowDefinition,
    WorkflowInvalid,
    check_workflow,
    run_workflow,
    topological_order,
    upstream,
    validate_workflow,
)
from citadel.workflows.builtin import register_builtins


class NoopParams(BaseModel):
    model_config = ConfigDict(extra="allow")


class NeedsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=0)
    items: list[str]
    label: str = "x"


def make_registry(log: list[str] | None = None) -> StepRegistry:
    registry = StepRegistry()
    register_builtins(registry)

    async def noop(params: NoopParams, ctx: StepContext) -> dict[str, Any]:
        if log is not None:
            log.append(ctx.step_id)
        return {"id": ctx.step_id, "x": {"y": 1}}

    async def needs(params: NeedsParams, ctx: StepContext) -> dict[str, Any]:
        return params.model_dump()

    registry.register("noop", noop, params=NoopParams)
    registry.register("needs", needs, params=NeedsParams)
    return registry


REGISTRY = make_registry()


def wf(*steps: dict[str, Any], context: dict[str, Any] | None = None) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate({"workflow_id": "w", "steps": list(steps), "context": context or {}})


def step(step_id: str, type: str = "noop", depends_on: list[str] | None = None, **parameters: Any) -> dict[str, Any]:
    return {"step_id": step_id, "type": type, "depends_on": depends_on or [], "parameters": parameters}


# random graphs ----------------------------------------------------------------------------------


@st.composite
def graphs(draw: st.DrawFn) -> tuple[WorkflowDefinition, dict[str, set[str]], set[str]]:
    """A random workflow, its dependency edges (step -> steps it needs) and the unknown ids it names.

    Half the time the edges only point backwards in a hidden order (acyclic for sure); otherwise
    they are arbitrary and cycles are likely. Edges are split between depends_on and references.
    """
    n = draw(st.integers(min_value=1, max_value=8))
    ids = [f"s{i}" for i in range(n)]
    acyclic = draw(st.booleans())
    hidden = draw(st.permutations(ids))  # acyclic mode: a step may only need steps before it here
    deps: dict[str, set[str]] = {}
    unknown: set[str] = set()
    steps = []
    for step_id in draw(st.permutations(ids)):  # declaration order differs from the hidden order
        pool = hidden[: hidden.index(step_id)] if acyclic else [i for i in ids if i != step_id]
        needed = draw(st.lists(st.sampled_from(pool), unique=True, max_size=3)) if pool else []
        ghosts = draw(st.lists(st.sampled_from(["ghost", "phantom"]), unique=True, max_size=1)) if draw(st.integers(0, 9)) == 0 else []
        unknown.update(ghosts)
        depends_on: list[str] = []
        refs: list[str] = []
        for target in [*needed, *ghosts]:
            kind = draw(st.sampled_from(["depends_on", "whole", "embedded"]))
            if kind == "depends_on":
                depends_on.append(target)
            elif kind == "whole":
                refs.append(f"${{steps.{target}.output.x}}")
            else:
                refs.append(f"value of {target}: ${{steps.{target}.output.x.y}}")
        deps[step_id] = set(needed)
        steps.append(step(step_id, depends_on=depends_on, inputs=refs))
    return wf(*steps), deps, unknown


def is_acyclic(deps: dict[str, set[str]]) -> bool:
    remaining = {k: set(v) for k, v in deps.items()}
    while remaining:
        free = [k for k, v in remaining.items() if not v]
        if not free:
            return False
        for k in free:
            del remaining[k]
        for v in remaining.values():
            v.difference_update(free)
    return True


CYCLE = re.compile(r"^cycle: (.+) \(each step depends on the next\)$")


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_random_graphs_valid_exactly_when_acyclic_and_known(case: tuple[WorkflowDefinition, dict[str, set[str]], set[str]]) -> None:
    """No problem iff the graph has no cycle and names no unknown step; then the order is sound."""
    defn, deps, unknown = case
    problems = validate_workflow(defn, REGISTRY)
    acyclic = is_acyclic(deps)
    assert (problems == []) == (acyclic and not unknown), problems
    assert upstream(defn) == deps
    unknown_problems = [p for p in problems if "unknown step" in p.message]
    assert {re.search(r"unknown step '(\w+)'", p.message).group(1) for p in unknown_problems} == unknown
    for problem in unknown_problems:
        index = int(problem.location.split("]")[0].split("[")[1])
        assert problem.location.startswith((f"steps[{index}].depends_on[", f"steps[{index}].parameters.inputs["))
    cycles = [CYCLE.match(p.message) for p in problems if p.message.startswith("cycle")]
    assert bool(cycles) == (not acyclic)
    for match in cycles:
        assert match is not None
        names = match.group(1).split(" -> ")
        assert names[0] == names[-1] and len(set(names[:-1])) == len(names) - 1
        for source, target in pairwise(names):
            assert target in deps[source], f"{source} -> {target} is not an edge"
    if not acyclic:
        with pytest.raises(WorkflowInvalid, match="cycle: "):
            topological_order(defn)
        return
    if unknown:
        with pytest.raises(WorkflowInvalid, match="unknown step"):
            topological_order(defn)
        return
    order = topological_order(defn)
    assert sorted(order) == sorted(deps)
    position = {step_id: i for i, step_id in enumerate(order)}
    for step_id, needed in deps.items():
        assert all(position[dep] < position[step_id] for dep in needed)
    # Deterministic and stable: among ready steps, the one declared first runs first.
    declared = defn.step_ids
    expected: list[str] = []
    while len(expected) < len(declared):
        expected.append(next(s for s in declared if s not in expected and deps[s] <= set(expected)))
    assert order == expected
    ancestors = upstream(defn, transitive=True)
    for step_id in declared:
        assert deps[step_id] <= ancestors[step_id]
        assert all(position[a] < position[step_id] for a in ancestors[step_id])
    # And running the workflow runs every step after everything it needs.
    log: list[str] = []
    outputs = asyncio.run(run_workflow(defn, registry=make_registry(log)))
    assert log == order and set(outputs) == set(declared)


# every problem at once ----------------------------------------------------------------------


def test_four_different_problems_are_reported_together() -> None:
    """A duplicate id, an unknown type, an unknown dependency and an unknown parameter: four problems."""
    defn = wf(
        step("a", "chunk", text="hello", bogus=1),
        step("a", "noop"),
        step("b", "teleport"),
        step("c", "noop", depends_on=["a", "nowhere"]),
    )
    problems = validate_workflow(defn, REGISTRY)
    assert [p.location for p in problems] == [
        "steps[0].parameters.bogus",
        "steps[1].step_id",
        "steps[2].type",
        "steps[3].depends_on[1]",
    ]
    assert "unknown parameter 'bogus' for step type 'chunk'; accepted: text, texts, chunk_size, chunk_overlap" in problems[0].message
    assert problems[1].message == "duplicate step id 'a' (first declared at steps[0])"
    assert problems[2].message.startswith("unknown step type 'teleport'; known types: chunk, embedding, flow, index, needs, noop, search")
    assert problems[3].message.startswith("depends on unknown step 'nowhere'")
    with pytest.raises(WorkflowInvalid) as caught:
        check_workflow(defn, REGISTRY)
    assert caught.value.problems == problems
    lines = str(caught.value).splitlines()
    assert lines[0] == "workflow 'w' is invalid (4 problems):"
    assert lines[1:] == [f"  - {p.location}: {p.message}" for p in problems]


def test_reference_and_context_problems() -> None:
    """Self references, unknown steps, missing context keys, malformed tokens and cycles together."""
    defn = wf(
        step("load", "noop", inputs=["${steps.load.output.x}"]),
        step("mix", "noop", depends_on=["load"], a="${steps.nowhere.output}", b="${context.missing.key}", c="${context.ok.deep}"),
        step("p", "noop", depends_on=["q"], d="${steps.p.output.x} and ${steps.q.output.y}"),
        step("q", "noop", e="${steps.r.output}"),
        step("r", "noop", f={"g": ["${steps.p.output}"]}, h="${steps.load.outputs}"),
        step("me", "noop", depends_on=["me"]),
        context={"ok": {"deep": 1}},
    )
    problems = validate_workflow(defn, REGISTRY)
    found = [(p.location, p.message) for p in problems]
    assert found == [
        ("steps[0].parameters.inputs[0]", "a step cannot reference its own output"),
        ("steps[1].parameters.a", "references unknown step 'nowhere'; steps: load, mix, p, q, r, me"),
        ("steps[1].parameters.b", "${context.missing.key}: context has no key 'missing' (keys: ok)"),
        ("steps[2].parameters.d", "a step cannot reference its own output"),
        ("steps[4].parameters.h",
         "malformed reference ${steps.load.outputs}: expected ${steps.<step_id>.output} or ${steps.<step_id>.output.<path>}"),
        ("steps[5].depends_on[0]", "a step cannot depend on itself"),
        ("steps[2].depends_on[0]", "cycle: p -> q -> r -> p (each step depends on the next)"),
    ]
    # Context given at run time satisfies a reference the definition's own context lacks.
    assert "steps[1].parameters.b" not in {p.location for p in validate_workflow(defn, REGISTRY, context={"missing": {"key": 2}})}


def test_parameters_checked_against_the_model_with_references_as_values() -> None:
    """Missing, unknown and ill-typed parameters are reported; a reference satisfies any field."""
    defn = wf(
        step("src", "noop"),
        step("bad", "needs", depends_on=["src"], count=-1, items="not a list", extra=True),
        step("missing", "needs"),
        step("refs", "needs", count="${steps.src.output.x.y}", items="${context.items}"),
        step("nested", "needs", count=1, items=["ok", "${steps.src.output.id}", 3]),
        step("embedded", "needs", count="1${context.n}", items=[]),
        context={"items": ["a"], "n": 2},
    )
    found = [(p.location, p.message) for p in validate_workflow(defn, REGISTRY)]
    assert found == [
        ("steps[1].parameters.extra", "unknown parameter 'extra' for step type 'needs'; accepted: count, items, label"),
        ("steps[1].parameters.count", "Input should be greater than or equal to 0"),
        ("steps[1].parameters.items", "Input should be a valid list"),
        ("steps[2].parameters.count", "required but missing"),
        ("steps[2].parameters.items", "required but missing"),
        ("steps[4].parameters.items[2]", "Input should be a valid string"),
    ]


def test_model_level_rules_of_builtins_are_reported() -> None:
    """Rules across fields (exactly one of text/texts) come back located at the parameters."""
    defn = wf(step("c", "chunk"), step("e", "embedding", text="a", texts=["b"]), step("ok", "embedding", texts="${steps.c.output.texts}"))
    found = [(p.location, p.message) for p in validate_workflow(defn, REGISTRY)]
    assert found == [
        ("steps[0].parameters", "give exactly one of 'text' (one string) or 'texts' (a list of strings)"),
        ("steps[1].parameters", "give exactly one of 'text' (one string) or 'texts' (a list of strings)"),
    ]


def test_raw_mappings_are_validated_too() -> None:
    """A mapping is checked against the schema first; schema problems come back the same way."""
    assert validate_workflow({"workflow_id": "w", "steps": [{"step_id": "a", "type": "noop"}]}, REGISTRY) == []
    assert validate_workflow({"workflow_id": "w", "steps": [{"step_id": "a"}]}, REGISTRY) == [
        Problem("steps[0].type", "required but missing")
    ]
    with pytest.raises(WorkflowInvalid, match="workflow 'w' is invalid"):
        check_workflow({"workflow_id": "w", "steps": [{"step_id": "a", "type": "nope"}]}, REGISTRY)
    assert check_workflow({"workflow_id": "w", "steps": [{"step_id": "a", "type": "noop"}]}, REGISTRY).step_ids == ["a"]


def test_order_is_stable_by_declaration() -> None:
    """Independent steps keep their declared order; a dependency moves a step later, no more."""
    defn = wf(step("d", depends_on=["b"]), step("c"), step("b"), step("a", x="${steps.c.output}"))
    assert topological_order(defn) == ["c", "b", "d", "a"]
    assert upstream(defn) == {"d": {"b"}, "c": set(), "b": set(), "a": {"c"}}
    chain = wf(*[step(f"n{i}", depends_on=[f"n{i + 1}"] if i < 299 else []) for i in range(300)])
    assert topological_order(chain) == [f"n{i}" for i in reversed(range(300))]  # long chains: no recursion limit
    assert upstream(chain, transitive=True)["n0"] == {f"n{i}" for i in range(1, 300)}
    with pytest.raises(WorkflowInvalid, match="duplicate step id"):
        topological_order(wf(step("a"), step("a")))


def test_union_alternatives_share_one_location() -> None:
    """A value matching no member of a union is one problem at the user's path, not one per member."""
    defn = wf(step("i", "index", source=3), step("s", "search", embedder={"kind": "gpu"}))
    assert [(p.location, p.message) for p in validate_workflow(defn, REGISTRY)] == [
        ("steps[0].parameters.source", "Input should be a valid string or Input should be a valid list"),
        ("steps[1].parameters.query", "required but missing"),
        ("steps[1].parameters.embedder.kind", "Input should be 'hashing', 'wordllama', 'ollama' or 'openai'"),
    ]


def test_schema_problems_and_every_other_problem_come_in_one_pass() -> None:
    """A step without a type, and another with an unknown dependency and no source: all at once,
    not one per attempt."""
    data = {
        "workflow_id": "w",
        "steps": [
            {"step_id": "a", "parameters": {"text": "x"}},
            {"step_id": "b", "type": "chunk", "parameters": {"text": "some text"}},
            {"step_id": "c", "type": "noop"},
            {"step_id": "d", "type": "index", "depends_on": ["zzz"]},
            "not a step",
        ],
    }
    found = [(p.location, p.message) for p in validate_workflow(data, REGISTRY)]
    assert found == [
        ("steps[0].type", "required but missing"),
        ("steps[4]", "Input should be a valid dictionary or instance of StepSpec"),
        ("steps[3].depends_on[0]", "depends on unknown step 'zzz'; steps: a, b, c, d"),
        ("steps[3].parameters.source", "required but missing"),
    ]


def test_references_to_outputs_a_step_type_does_not_have_are_caught() -> None:
    defn = wf(
        step("a", "chunk", text="x"),
        step("b", "embedding", texts="${steps.a.output.nosuchfield}"),
        step("c", "embedding", texts="${steps.a.output.texts}"),
        step("d", "search", query="${steps.b.output.model}"),
        step("e", "noop", x="${steps.d.output.hits.0.text}"),
    )
    (problem,) = validate_workflow(defn, REGISTRY)
    assert problem.location == "steps[1].parameters.texts"
    assert "step 'a' (type 'chunk') has no output 'nosuchfield'; its outputs: chunks, texts" in problem.message


def test_a_custom_step_type_declares_its_outputs() -> None:
    registry = REGISTRY.copy()

    @registry.step_type("counted", params=NoopParams, outputs=["total"])
    async def counted(params: NoopParams, ctx: StepContext) -> dict[str, Any]:
        return {"total": 1}

    ok = wf(step("a", "counted"), step("b", "noop", x="${steps.a.output.total}"), step("c", "noop", x="${steps.a.output.anything.deep}"))
    problems = validate_workflow(ok, registry)
    assert [p.location for p in problems] == ["steps[2].parameters.x"]
    undeclared = wf(step("a", "noop"), step("b", "noop", x="${steps.a.output.anything}"))
    assert validate_workflow(undeclared, registry) == [], "a type that declares no outputs is not checked"


def test_an_unterminated_reference_is_an_error_not_text() -> None:
    defn = wf(step("a", "chunk", text="x"), step("b", "noop", x="${steps.a.output", y="price ${5"))
    (problem,) = validate_workflow(defn, REGISTRY)
    assert problem.location == "steps[1].parameters.x"
    assert "unterminated reference" in problem.message and "'}' is missing" in problem.message


def test_an_unknown_step_type_says_how_custom_types_are_loaded() -> None:
    (problem,) = validate_workflow(wf(step("a", "word_count")), REGISTRY)
    assert "unknown step type 'word_count'" in problem.message and "CITADEL_STEP_MODULES" in problem.message


def test_a_cache_only_on_step_types_that_change_nothing() -> None:
    defn = {
        "workflow_id": "w",
        "steps": [
            {"step_id": "c", "type": "chunk", "cache": {"expiration": "1h", "key": ["text"]}, "parameters": {"text": "x"}},
            {"step_id": "i", "type": "index", "cache": {"expiration": 60}, "parameters": {"source": "docs"}},
            {"step_id": "e", "type": "embedding", "cache": {"expiration": "2d", "key": ["texts", "nope"]}, "parameters": {"text": "x"}},
            {"step_id": "s", "type": "search", "cache": {"expiration": "soon"}, "parameters": {"query": "x"}},
        ],
    }
    found = [(p.location, p.message) for p in validate_workflow(defn, REGISTRY)]
    assert found[0] == ("steps[3].cache.expiration", "'soon' is not a duration; write seconds (3600) or 90s, 15m, 1h, 2d")
    assert ("steps[1].cache", "step type 'index' changes state, so its steps cannot be cached; remove 'cache'") in found
    assert any(location == "steps[2].cache.key[1]" and "'nope' is not a parameter" in message for location, message in found)
    assert len(found) == 3
    assert check_workflow({**defn, "steps": defn["steps"][:1]}, REGISTRY).steps[0].cache.expiration == 3600  # type: ignore[union-attr]
