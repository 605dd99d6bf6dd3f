"""``citadel workflow``: validate, run and inspect declarative workflows."""

from __future__ import annotations

from typing import Any, NoReturn

import typer

from citadel.errors import ConfigurationError
from citadel.workflows import WorkflowDefinition, WorkflowInvalid
from cli.common import JsonOption, err, fail, out, print_json, run, settings
from cli.prefectenv import quiet_prefect
from cli.runview import StepProgress, header_lines, print_lines, report_lines

workflow_app = typer.Typer(no_args_is_help=True, help="Validate, run and inspect declarative workflows.")


def _load_definition(path: str) -> WorkflowDefinition | WorkflowInvalid:
    from citadel.workflows import WorkflowInvalid, check_workflow, load_step_modules, load_workflow_data

    try:
        config = settings()
        load_step_modules(config.step_modules)
        data = load_workflow_data(path, max_depth=config.max_nesting_depth)
        return check_workflow(data)  # the schema's problems and every other at once
    except WorkflowInvalid as exc:
        return exc
    except ConfigurationError as exc:
        fail(str(exc))


def _print_problems(exc: WorkflowInvalid, as_json: bool) -> NoReturn:
    problems = [{"location": p.location, "message": p.message} for p in exc.problems]
    if as_json:
        print_json({"valid": False, "problems": problems})
    else:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@workflow_app.command("validate")
def workflow_validate(
    file: str = typer.Argument(..., help="A workflow definition, JSON or YAML."),
    as_json: bool = JsonOption,
) -> None:
    """Check a workflow and report every problem at once, with its location."""
    from citadel.workflows import topological_order

    definition = _load_definition(file)
    if isinstance(definition, Exception):
        _print_problems(definition, as_json)
    order = topological_order(definition)
    if as_json:
        print_json({"valid": True, "workflow_id": definition.workflow_id, "order": order})
    else:
        out.print(f"[green]valid[/green]: {definition.workflow_id}, {len(order)} steps in order {' -> '.join(order)}")


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        print_json(report)  # the WorkflowReport's keys, as scripts read them
        return
    print_lines(out, report_lines(report))


@workflow_app.command("run")
def workflow_run(
    file: str = typer.Argument(..., help="A workflow definition, JSON or YAML."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the run and print the per-step report."),
    deployment: str = typer.Option("run-workflow/default", "--deployment", help="Deployment to run it through."),
    local: bool = typer.Option(False, "--local", help="Run in this process instead of through a deployment."),
    as_json: bool = JsonOption,
) -> None:
    """Run a workflow: through its deployment when a Prefect server is configured, else here.

    The run's name, id and page in the Prefect UI come at once, then its steps' states while it
    is waited for, then the report."""
    definition = _load_definition(file)
    if isinstance(definition, Exception):
        _print_problems(definition, as_json)
    payload = definition.model_dump(mode="json")
    quiet_prefect()
    from orchestration.workflow_runs import follow_workflow, run_url, start_workflow

    async def go() -> tuple[Any, str | None]:
        report, here = await start_workflow(payload, deployment=deployment, local=local)
        url = run_url(report.flow_run_id)
        if not as_json:
            print_lines(out, header_lines(report, url))
        if here is None and not wait:
            return report, url
        if as_json:
            return await follow_workflow(report.flow_run_id, here), url
        with StepProgress(out) as progress:
            return await follow_workflow(report.flow_run_id, here, on_report=progress), url

    report, url = run(go)
    if report.state == "Scheduled":  # went through the deployment and was not waited for
        if as_json:
            print_json({"flow_run_id": report.flow_run_id, "id": report.flow_run_id, "name": report.name, "url": url})
        return
    _print_report(report, as_json)
    raise typer.Exit(0 if report.state == "Completed" else 1)


@workflow_app.command("status")
def workflow_status_command(
    run_id: str = typer.Argument(..., help="The flow run id that `citadel workflow run` printed."),
    as_json: bool = JsonOption,
) -> None:
    """A workflow run's state and, per step, its state, start, end and error."""
    quiet_prefect()
    from orchestration.workflow_runs import workflow_status

    _print_report(run(lambda: workflow_status(run_id)), as_json)
