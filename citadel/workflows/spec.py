"""The shape of a declarative workflow, and loading one from JSON or YAML text or a file.

A workflow is the body of ``POST /api/v1/orchestration/workflow``
(``{"workflow_id", "steps": [{"step_id", "type", "parameters"}], "context": {}}``) with explicit
``depends_on`` edges, per-step retries and timeouts added.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from citadel.nesting import DEFAULT_MAX_DEPTH, NestingError, check_json_depth, check_yaml_events
from citadel.workflows.errors import Problem, WorkflowInvalid, WorkflowLoadError, problem_from_error

ID_PATTERN = r"^[A-Za-z0-9_.-]+$"


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class StepCache(BaseModel):
    """How long a step's output may be reused for the same inputs, model and step code."""

    model_config = ConfigDict(extra="forbid")

    expiration: float = Field(gt=0, description="Seconds, or text such as 90s, 15m, 1h, 2d.")
    key: list[str] | None = Field(None, description="Parameters that form the key (default: all of them).")

    @field_validator("expiration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _DURATION.fullmatch(value)
            if not match:
                raise ValueError(f"{value!r} is not a duration; write seconds (3600) or 90s, 15m, 1h, 2d")
            return float(match.group(1)) * _UNIT_S[match.group(2)]
        return value


class StepSpec(BaseModel):
    """One step: which step type runs, with which parameters, after which other steps."""

    model_config = ConfigDict(extra="forbid")

    step_id: str = Field(pattern=ID_PATTERN, description="Unique within the workflow; letters, digits, _ . -")
    type: str = Field(min_length=1, description="A registered step type, e.g. chunk, embedding, index.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="May hold ${steps...} and ${context...}.")
    depends_on: list[str] = Field(default_factory=list, description="Steps that must finish first.")
    retries: int = Field(0, ge=0, description="Extra attempts after a failure.")
    timeout_seconds: float | None = Field(None, gt=0, description="Limit of one attempt.")
    cache: StepCache | None = Field(None, description="Reuse the output across runs (step types that allow it).")


class WorkflowDefinition(BaseModel):
    """A named list of steps and the context their parameters may reference."""

    model_config = ConfigDict(extra="forbid")

    workflow_id: str = Field(pattern=ID_PATTERN)
    description: str | None = None
    steps: list[StepSpec] = Field(min_length=1)
    context: dict[str, Any] = Field(default_factory=dict)

    def step(self, step_id: str) -> StepSpec:
        """The first step called ``step_id`` (a KeyError naming the known ids otherwise)."""
        for spec in self.steps:
            if spec.step_id == step_id:
                return spec
        raise KeyError(f"no step {step_id!r} in workflow {self.workflow_id!r}; steps: {', '.join(self.step_ids)}")

    @property
    def step_ids(self) -> list[str]:
        return [spec.step_id for spec in self.steps]


def workflow_from_data(data: Any) -> WorkflowDefinition:
    """A definition from already parsed data; every schema error at once as :class:`WorkflowInvalid`."""
    if not isinstance(data, dict):
        raise WorkflowInvalid([Problem("", f"a workflow must be a mapping, got {type(data).__name__}")])
    try:
        return WorkflowDefinition.model_validate(data)
    except ValidationError as exc:
        workflow_id = data.get("workflow_id") if isinstance(data.get("workflow_id"), str) else None
        raise WorkflowInvalid([problem_from_error(error) for error in exc.errors()], workflow_id) from None


def partial_definition(data: Any) -> WorkflowDefinition | None:
    """What can be read of a definition that failed its schema, so that validation finds its
    other problems (unknown dependencies, bad parameters) in the same pass.

    Steps keep their positions and the fields that are valid; a step without a valid id gets a
    placeholder (``#<index>``) that no reference can name; unusable parameters become None.
    """
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        return None
    steps: list[StepSpec] = []
    for index, raw in enumerate(data["steps"]):
        raw = raw if isinstance(raw, dict) else {}
        step_id, kind = raw.get("step_id"), raw.get("type")
        parameters = raw.get("parameters", {})
        depends_on = raw.get("depends_on", [])
        readable: dict[str, Any] = dict(  # None where the schema found the field unusable
            step_id=step_id if isinstance(step_id, str) and re.fullmatch(ID_PATTERN, step_id) else f"#{index}",
            type=kind if isinstance(kind, str) and kind else None,
            parameters=parameters if isinstance(parameters, dict) else None,
            depends_on=[dep for dep in depends_on if isinstance(dep, str)] if isinstance(depends_on, list) else [],
            retries=0,
            timeout_seconds=None,
            cache=_valid_cache(raw.get("cache")),
        )
        steps.append(StepSpec.model_construct(**readable))
    context = data.get("context")
    workflow_id = data.get("workflow_id")
    return WorkflowDefinition.model_construct(
        workflow_id=workflow_id if isinstance(workflow_id, str) else "",
        description=None,
        steps=steps,
        context=context if isinstance(context, dict) else {},
    )


def _valid_cache(raw: Any) -> StepCache | None:
    try:
        return StepCache.model_validate(raw) if raw is not None else None
    except ValidationError:
        return None  # its problem is in the schema's


def is_placeholder(step_id: str) -> bool:
    """Whether ``step_id`` stands in for a missing or invalid id (see :func:`partial_definition`)."""
    return step_id.startswith("#")


def _parse(text: str, origin: str, fmt: str | None, max_depth: int) -> Any:
    """JSON or YAML ``text``; ``fmt`` (json/yaml) is forced by a file's suffix, else guessed.

    Nesting deeper than ``max_depth`` and YAML aliases that expand past a bound are refused before
    the text is built into values: past them, walking the values would exhaust the stack or memory."""
    try:
        if fmt == "json" or (fmt is None and text.lstrip().startswith("{")):
            check_json_depth(text, max_depth, origin)
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise WorkflowLoadError(f"{origin} is not valid JSON: {exc}") from None
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - PyYAML comes with Prefect
            raise WorkflowLoadError("reading YAML workflows needs PyYAML (pip install pyyaml)") from exc
        try:
            check_yaml_events(yaml.parse(text, Loader=yaml.SafeLoader), max_depth, origin)
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise WorkflowLoadError(f"{origin} is not valid YAML: {exc}") from None
    except NestingError as exc:
        raise WorkflowLoadError(str(exc)) from None


def _is_path(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` names a file rather than holding a definition: one line that is an existing
    file, or that has no ``key: value`` or JSON syntax in it."""
    if isinstance(value, os.PathLike):
        return True
    text = value.strip()
    if not text or "\n" in text:
        return False
    try:
        if Path(text).expanduser().is_file():
            return True
    except OSError:  # a name too long for the file system is text
        return False
    return not text.startswith(("{", "[")) and ": " not in text and not text.endswith(":")


def load_workflow_data(path_or_text: str | os.PathLike[str], *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """The parsed data of a ``.json``/``.yaml``/``.yml`` file, or of JSON or YAML text, unchecked.

    A single line naming an existing file (or ending in a workflow suffix) is read as a path;
    anything else is parsed as text. Nesting past ``max_depth`` (CITADEL_MAX_NESTING_DEPTH) and
    YAML aliases that expand past :data:`~citadel.nesting.MAX_ALIAS_NODES` nodes are a
    :class:`WorkflowLoadError`.
    """
    fmt: str | None = None
    if _is_path(path_or_text):
        path = Path(path_or_text if isinstance(path_or_text, os.PathLike) else path_or_text.strip()).expanduser()
        if not path.is_file():
            raise WorkflowLoadError(f"workflow file {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        fmt = "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else None
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise WorkflowLoadError(f"cannot read workflow file {str(path)!r}: {exc}") from None
        origin = str(path)
    else:
        text, origin = str(path_or_text), "workflow text"
    if not text.strip():
        raise WorkflowLoadError(f"{origin} is empty")
    return _parse(text, origin, fmt, max_depth)


def load_workflow(path_or_text: str | os.PathLike[str], *, max_depth: int = DEFAULT_MAX_DEPTH) -> WorkflowDefinition:
    """A definition from a file or from JSON or YAML text (see :func:`load_workflow_data`);
    its schema errors at once as :class:`WorkflowInvalid`."""
    return workflow_from_data(load_workflow_data(path_or_text, max_depth=max_depth))
