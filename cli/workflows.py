"""``citadel workflow``: validate, run and inspect declarative workflows."""

from __future__ import annotations

import json
import os
from typing import Any, NoReturn

import typer
from rich.table import Table

from citadel.errors import ConfigurationError
from cli.common import JsonOption, err, fail, out, print_json, quiet_prefect, run, settings

workflow_app = typer.Typer(no_args_is_help=True, help="Validate, run and inspect declarative workflows.")


def _load_definition(path: str):  # noqa: ANN202
    from citadel.workflows import WorkflowInvalid, check_workflow, load_step_modules
    from citadel.workflows.spec import load_workflow_data

    try:
        load_step_modules(settings().step_modules)
        return check_workflow(load_workflow_data(path))  # the schema's problems and every other at once
    except WorkflowInvalid as exc:
        return exc
    except ConfigurationError as exc:
        fail(str(exc))


def _print_problems(exc: Exception, as_json: bool) -> NoReturn:
    problems = [{"location": p.location, "message": p.message} for p in exc.problems]  # type: ignore[attr-defined]
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


def _print_report(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(status)
        return
    out.print(f"[bold]{status.get('workflow_id') or status['name']}[/bold] flow run {status['flow_run_id']}: {status['state']}", highlight=False)
    table = Table()
    for column in ("step", "state", "start", "end", "output or error"):
        table.add_column(column)
    for step_id, step in status["steps"].items():
        detail = step.get("error") or (json.dumps(step["output"], default=str)[:80] if "output" in step else "")
        table.add_row(step_id, step["state"], (step["start"] or "")[11:19], (step["end"] or "")[11:19], detail)
    out.print(table)


@workflow_app.command("run")
def workflow_run(
    file: str = typer.Argument(..., help="A workflow definition, JSON or YAML."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the run and print the per-step report."),
    deployment: str = typer.Option("run-workflow/default", "--deployment", help="Deployment to run it through."),
    local: bool = typer.Option(False, "--local", help="Run in this process instead of through a deployment."),
    as_json: bool = JsonOption,
) -> None:
    """Run a workflow: through its deployment when a Prefect server is configured, else here."""
    definition = _load_definition(file)
    if isinstance(definition, Exception):
        _print_problems(definition, as_json)
    payload = definition.model_dump(mode="json")
    quiet_prefect()

    async def go() -> dict[str, Any]:
        from flows.run_workflow import run_workflow, wait_for_workflow

        if local or not os.environ.get("PREFECT_API_URL"):
            state = await run_workflow(payload, return_state=True)
            return await wait_for_workflow(str(state.state_details.flow_run_id))
        from prefect.deployments import run_deployment
        from prefect.exceptions import ObjectNotFound

        try:
            flow_run = await run_deployment(deployment, parameters={"workflow": payload}, timeout=0)
        except ObjectNotFound:
            raise ConfigurationError(
                f"deployment {deployment!r} not found on {os.environ['PREFECT_API_URL']}; "
                "run `prefect deploy --all` (or `citadel serve`), or use --local"
            ) from None
        if not wait:
            return {"flow_run_id": str(flow_run.id), "state": "Scheduled", "steps": {}}
        return await wait_for_workflow(str(flow_run.id))

    status = run(go)
    if not wait and not local and os.environ.get("PREFECT_API_URL"):
        if as_json:
            print_json({"flow_run_id": status["flow_run_id"]})
        else:
            out.print(status["flow_run_id"])
        return
    _print_report(status, as_json)
    raise typer.Exit(0 if status["state"] == "Completed" else 1)


@workflow_app.command("status")
def workflow_status_command(
    run_id: str = typer.Argument(..., help="The flow run id that `citadel workflow run` printed."),
    as_json: bool = JsonOption,
) -> None:
    """A workflow run's state and, per step, its state, start, end and error."""
    quiet_prefect()
    from flows.run_workflow import workflow_status

    async def go() -> dict[str, Any]:
        from prefect.exceptions import ObjectNotFound

        try:
            return await workflow_status(run_id)
        except (ObjectNotFound, ValueError):
            raise ConfigurationError(f"no flow run {run_id!r} on this Prefect server") from None

    _print_report(run(go), as_json)


