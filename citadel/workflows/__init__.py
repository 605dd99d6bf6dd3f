"""Declarative workflows without an orchestrator: definitions, references, step types, validation.

A workflow is a list of typed steps whose parameters may reference earlier outputs and the
context. The core defines, checks and (sequentially) runs them; the Prefect layer runs the same
steps as flows and tasks.
"""

from citadel.workflows import builtin as _builtin  # noqa: F401 - registers the built-in step types
from citadel.workflows.builtin import register_builtins
from citadel.workflows.errors import (
    DuplicateStepType,
    OrchestrationRequired,
    Problem,
    StepFailed,
    UnknownStepType,
    UnresolvedReference,
    WorkflowError,
    WorkflowInvalid,
    WorkflowLoadError,
)
from citadel.workflows.references import Reference, find_references, resolve
from citadel.workflows.runner import run_step, run_workflow
from citadel.workflows.spec import StepSpec, WorkflowDefinition, load_workflow, workflow_from_data
from citadel.workflows.steps import (
    StepContext,
    StepRegistry,
    StepType,
    default_registry,
    get_step_type,
    load_step_modules,
    step_type,
    step_types,
)
from citadel.workflows.validation import check_workflow, topological_order, upstream, validate_workflow

__all__ = [
    "DuplicateStepType",
    "OrchestrationRequired",
    "Problem",
    "Reference",
    "StepContext",
    "StepFailed",
    "StepRegistry",
    "StepSpec",
    "StepType",
    "UnknownStepType",
    "UnresolvedReference",
    "WorkflowDefinition",
    "WorkflowError",
    "WorkflowInvalid",
    "WorkflowLoadError",
    "check_workflow",
    "default_registry",
    "find_references",
    "get_step_type",
    "load_step_modules",
    "load_workflow",
    "register_builtins",
    "resolve",
    "run_step",
    "run_workflow",
    "step_type",
    "step_types",
    "topological_order",
    "upstream",
    "validate_workflow",
    "workflow_from_data",
]
