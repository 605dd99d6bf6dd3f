"""Errors of declarative workflows, and the located problem a validator reports.

Every invalid definition is reported as one :class:`WorkflowInvalid` listing all of its problems,
so a user fixes a workflow in one pass instead of one error at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from citadel.errors import CitadelError, ConfigurationError


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a definition: where (``steps[2].depends_on[0]``) and what."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class WorkflowError(CitadelError):
    """Base class of every error raised by the workflow core."""


class WorkflowInvalid(WorkflowError, ConfigurationError):
    """A definition (or a step's parameters) that cannot run; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[Problem], workflow_id: str | None = None) -> None:
        self.problems = list(problems)
        self.workflow_id = workflow_id
        name = f"workflow {workflow_id!r}" if workflow_id else "workflow"
        count = len(self.problems)
        lines = [f"{name} is invalid ({count} problem{'' if count == 1 else 's'}):"]
        lines.extend(f"  - {problem}" for problem in self.problems)
        super().__init__("\n".join(lines))


class WorkflowLoadError(WorkflowError, ConfigurationError):
    """A definition that cannot be read at all: a missing file or text that is not JSON or YAML."""


class UnresolvedReference(WorkflowError, LookupError):
    """A ``${...}`` reference whose path does not exist in the outputs or the context."""

    def __init__(self, reference: str, message: str) -> None:
        self.reference = reference
        super().__init__(f"{reference}: {message}")

    def __str__(self) -> str:  # LookupError would quote the message like a dict key
        return str(self.args[0])


class UnknownStepType(WorkflowError, LookupError):
    """A step type name that no registered step type carries."""

    def __str__(self) -> str:
        return str(self.args[0])


class DuplicateStepType(WorkflowError, ValueError):
    """A second registration of a step type name without ``replace=True``."""


class OrchestrationRequired(WorkflowError, ConfigurationError):
    """A step type that only the orchestration layer (Prefect) can run."""


class StepFailed(WorkflowError):
    """A step raised (after its retries) or timed out; ``step_id`` says which one."""

    def __init__(self, step_id: str, message: str) -> None:
        self.step_id = step_id
        super().__init__(f"step {step_id!r} failed: {message}")


def format_location(*parts: str | int) -> str:
    """``("steps", 2, "depends_on", 0)`` -> ``steps[2].depends_on[0]``: the path users see in problems."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


def problem_from_error(error: Mapping[str, Any], *prefix: str | int) -> Problem:
    """A :class:`Problem` from one pydantic error dict, located under ``prefix``."""
    loc = tuple(error.get("loc", ()))
    kind = error.get("type", "")
    where = format_location(*prefix, *loc)
    if kind == "missing":
        return Problem(where, "required but missing")
    if kind == "extra_forbidden":
        return Problem(where, f"unknown field {loc[-1]!r}" if loc else "unknown field")
    message = str(error.get("msg", "invalid value"))
    for noise in ("Value error, ", "Assertion failed, "):
        if message.startswith(noise):
            message = message[len(noise):]
    return Problem(where, message)
