"""Declarative workflows without an orchestrator: definitions, references, step types, validation.

A workflow is a list of typed steps whose parameters may reference earlier outputs and the
context. The core defines, checks and (sequentially) runs them; the Prefect layer runs the same
steps as flows and tasks.
"""

from citadel.workflows import builtin as _builtin  # noqa: F401 - registers the built-in step types
from citadel.workflows.builtin import FLOW_OUTPUTS, INDEX_OUTPUTS, FlowParams, IndexParams, register_builtins
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
    format_location,
)
from citadel.workflows.graph import topological_order, upstream
from citadel.workflows.outputs import summarize_output
from citadel.workflows.reach import COLLECTION_STEPS, NamedCollections, named_collections
from citadel.workflows.references import Reference, find_malformed, find_references, is_reference, referenced_steps, resolve
from citadel.workflows.runner import run_step, run_workflow
from citadel.workflows.sandbox import SANDBOX_PARAMETERS, Sandbox, owned_source_name, step_collection, takes_collection
from citadel.workflows.spec import StepSpec, WorkflowDefinition, load_workflow, load_workflow_data, workflow_from_data
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
from citadel.workflows.validation import check_workflow, validate_workflow

__all__ = [
    "COLLECTION_STEPS",
    "DuplicateStepType",
    "FLOW_OUTPUTS",
    "FlowParams",
    "INDEX_OUTPUTS",
    "IndexParams",
    "NamedCollections",
    "OrchestrationRequired",
    "Problem",
    "Reference",
    "SANDBOX_PARAMETERS",
    "Sandbox",
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
    "find_malformed",
    "find_references",
    "format_location",
    "get_step_type",
    "is_reference",
    "load_step_modules",
    "load_workflow",
    "load_workflow_data",
    "named_collections",
    "owned_source_name",
    "referenced_steps",
    "register_builtins",
    "resolve",
    "run_step",
    "run_workflow",
    "step_collection",
    "step_type",
    "step_types",
    "summarize_output",
    "takes_collection",
    "topological_order",
    "upstream",
    "validate_workflow",
    "workflow_from_data",
]
