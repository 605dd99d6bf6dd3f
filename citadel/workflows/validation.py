"""Static checks of a workflow definition, reporting every problem at once, and its run order.

A step's effective dependencies are its ``depends_on`` plus every step its parameters reference,
so a reference to a downstream step shows up as a cycle. Parameters are checked against the step
type's model with references counted as valid values, since they are only known at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from citadel.workflows.errors import (
    Problem,
    UnresolvedReference,
    WorkflowInvalid,
    format_location,
    problem_from_error,
)
from citadel.workflows.graph import cycle_problems, first_index, graph_problems
from citadel.workflows.references import contains_reference, find_malformed, find_references, lookup
from citadel.workflows.spec import StepCache, WorkflowDefinition, partial_definition, workflow_from_data
from citadel.workflows.steps import StepRegistry, StepType, default_registry, unknown_type_message

__all__ = [
    "Problem",
    "WorkflowInvalid",
    "check_workflow",
    "parameter_problems",
    "problems_from_validation",
    "validate_workflow",
]


def _accepted_names(model: type[BaseModel]) -> list[str]:
    names: list[str] = []
    for name, info in model.model_fields.items():
        names.append(name)
        for alias in (info.alias, info.validation_alias):
            if isinstance(alias, str) and alias not in names:
                names.append(alias)
    return names


def _under_reference(raw: Any, loc: tuple[Any, ...]) -> bool:
    """Whether an error at ``loc`` concerns a value given by a reference (known only at run time)."""
    current = raw
    for part in loc:
        if isinstance(current, str):
            break
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, (list, tuple)) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        else:
            return False
        if isinstance(current, str) and contains_reference(current):
            return True
    return isinstance(current, str) and contains_reference(current)


def _raw_location(raw: Any, loc: tuple[Any, ...], missing: bool) -> tuple[Any, ...]:
    """The part of a pydantic error location that exists in the given data.

    Union members add their type names (``source.str``) to locations; users see only the path
    into what they wrote, plus the name of a missing field.
    """
    kept: list[Any] = []
    current = raw
    for position, part in enumerate(loc):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, (list, tuple)) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        elif missing and position == len(loc) - 1 and isinstance(current, Mapping):
            kept.append(part)
            break
        else:
            continue
        kept.append(part)
    return tuple(kept)


def problems_from_validation(
    exc: ValidationError, parameters: Mapping[str, Any], *prefix: str | int, skip_references: bool = False
) -> list[Problem]:
    """Located problems of a parameters ValidationError; alternatives of a union share one line."""
    merged: dict[str, list[str]] = {}
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        if skip_references and (error.get("type") == "extra_forbidden" or _under_reference(parameters, loc)):
            continue
        cleaned = dict(error, loc=_raw_location(parameters, loc, error.get("type") == "missing"))
        problem = problem_from_error(cleaned, *prefix)
        messages = merged.setdefault(problem.location, [])
        if problem.message not in messages:
            messages.append(problem.message)
    return [Problem(location, " or ".join(messages)) for location, messages in merged.items()]


def parameter_problems(step: StepType, parameters: Mapping[str, Any], *prefix: str | int) -> list[Problem]:
    """Unknown, missing and ill-typed parameters of ``step``; values given by references pass."""
    model = step.params
    problems: list[Problem] = []
    accepted = _accepted_names(model)
    if model.model_config.get("extra") != "allow":
        for key in parameters:
            if key not in accepted:
                problems.append(
                    Problem(format_location(*prefix, key),
                            f"unknown parameter {key!r} for step type {step.name!r}; accepted: {', '.join(accepted) or 'none'}")
                )
    try:
        model.model_validate(dict(parameters))
    except ValidationError as exc:
        problems.extend(problems_from_validation(exc, parameters, *prefix, skip_references=True))
    return problems


def _step_problems(
    defn: WorkflowDefinition, registry: StepRegistry, context: Mapping[str, Any]
) -> list[tuple[int, Problem]]:
    found: list[tuple[int, Problem]] = []
    first = first_index(defn)
    for index, step in enumerate(defn.steps):
        params_at = ("steps", index, "parameters")
        if step.type is None or step.parameters is None:
            pass  # a schema problem already reported (see partial_definition)
        elif step.type not in registry:
            found.append((index, Problem(format_location("steps", index, "type"), unknown_type_message(step.type, registry.names()))))
        else:
            found.extend((index, p) for p in parameter_problems(registry.get(step.type), step.parameters, *params_at))
            if step.cache is not None:
                found.extend((index, p) for p in _cache_problems(registry.get(step.type), step.cache, index))
        for bad in find_malformed(step.parameters):
            found.append((index, Problem(format_location(*params_at, *bad.where), f"malformed reference {bad.text}: {bad.reason}")))
        for ref in find_references(step.parameters):
            location = format_location(*params_at, *ref.where)
            if ref.source == "context":
                try:
                    lookup(context, ref.path, "context", ref.text)
                except UnresolvedReference as exc:
                    found.append((index, Problem(location, str(exc))))
            elif ref.path and ref.step_id in first:
                problem = _output_problem(ref, defn.steps[first[ref.step_id]].type, registry)
                if problem:
                    found.append((index, Problem(location, problem)))
    return found


def _cache_problems(step_type: StepType, cache: StepCache, index: int) -> list[Problem]:
    """A cache on a step type that changes state, or keyed by parameters the type does not take."""
    if not step_type.cacheable:
        return [Problem(format_location("steps", index, "cache"),
                        f"step type {step_type.name!r} changes state, so its steps cannot be cached; remove 'cache'")]
    accepted = _accepted_names(step_type.params)
    return [
        Problem(format_location("steps", index, "cache", "key", position),
                f"{name!r} is not a parameter of step type {step_type.name!r}; accepted: {', '.join(accepted)}")
        for position, name in enumerate(cache.key or [])
        if name not in accepted and step_type.params.model_config.get("extra") != "allow"
    ]


def _output_problem(ref: Any, step_type: str | None, registry: StepRegistry) -> str | None:
    """Why ``ref`` names an output key its step's type does not declare, or None."""
    if step_type is None or step_type not in registry:
        return None
    outputs = registry.get(step_type).outputs
    if outputs is None or ref.path[0] in outputs:
        return None
    return (
        f"{ref.text}: step {ref.step_id!r} (type {step_type!r}) has no output {ref.path[0]!r}; "
        f"its outputs: {', '.join(outputs) or 'none'}"
    )


def validate_workflow(
    defn: WorkflowDefinition | Mapping[str, Any],
    registry: StepRegistry | None = None,
    *,
    context: Mapping[str, Any] | None = None,
) -> list[Problem]:
    """Every problem of ``defn`` at once (empty when it can run).

    ``context`` adds run-time context on top of the definition's own for checking
    ``${context...}`` references. A mapping is first checked against the schema.
    """
    registry = registry if registry is not None else default_registry
    if not isinstance(defn, WorkflowDefinition):
        try:
            defn = workflow_from_data(defn)
        except WorkflowInvalid as exc:
            # The schema's problems, and the others of what can be read: all of them in one pass.
            partial = partial_definition(defn)
            if partial is None:
                return exc.problems
            rest = _problems(partial, registry, context)
            return exc.problems + [problem for problem in rest if problem not in exc.problems]
    return _problems(defn, registry, context)


def _problems(defn: WorkflowDefinition, registry: StepRegistry, context: Mapping[str, Any] | None) -> list[Problem]:
    merged = {**defn.context, **(context or {})}
    per_step = graph_problems(defn) + _step_problems(defn, registry, merged)
    ordered = [problem for _, problem in sorted(per_step, key=lambda item: item[0])]  # stable: by step
    return ordered + cycle_problems(defn)


def check_workflow(
    defn: WorkflowDefinition | Mapping[str, Any],
    registry: StepRegistry | None = None,
    *,
    context: Mapping[str, Any] | None = None,
) -> WorkflowDefinition:
    """``defn`` as a definition when valid; :class:`WorkflowInvalid` with every problem otherwise."""
    problems = validate_workflow(defn, registry, context=context)
    workflow_id = defn.workflow_id if isinstance(defn, WorkflowDefinition) else defn.get("workflow_id")
    if problems:
        raise WorkflowInvalid(problems, workflow_id if isinstance(workflow_id, str) else None)
    return defn if isinstance(defn, WorkflowDefinition) else workflow_from_data(defn)


