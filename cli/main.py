"""``citadel``: index a corpus, search it, and check on the system.

Human output by default, ``--json`` for scripts. Exit codes: 0 success, 1 a run with failed
documents (or an unhealthy backend for ``doctor``), 2 bad usage or configuration.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any, Callable, Coroutine, NoReturn

# Embedded defaults for Prefect, set before it is imported: no analytics from an offline
# machine, and only warnings on the console (the progress bar and summary say the rest).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from citadel import progress  # noqa: E402
from citadel.errors import CitadelError, ConfigurationError  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Citadel: embed, cache, index and search documents.")
out = Console()
err = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of text.")
CollectionOption = typer.Option(None, "--collection", "-c", help="Vector collection (default: CITADEL_COLLECTION).")


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _prefect_unreachable(exc: BaseException | None) -> bool:
    """Whether ``exc`` is Prefect's client failing to reach its API server (not another backend)."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value() or ""
    while exc is not None:
        if str(exc).startswith("Failed to reach API"):
            return True
        if isinstance(exc, httpx.TransportError) and api_url:
            try:
                return str(exc.request.url).startswith(api_url)
            except RuntimeError:  # an error raised without its request
                return False
        exc = exc.__cause__
    return False


def _run(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine, turning errors into one-line messages: 2 for configuration, 1 for the rest.

    ``CITADEL_DEBUG=1`` lets an unexpected error through with its traceback.
    """
    try:
        return asyncio.run(make())
    except ConfigurationError as exc:
        _fail(str(exc), 2)
    except CitadelError as exc:
        _fail(str(exc), 1)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # noqa: BLE001 - the command line shows one line, not a traceback
        if _prefect_unreachable(exc):
            from prefect.settings import PREFECT_API_URL

            _fail(
                f"cannot reach the Prefect API at {PREFECT_API_URL.value()}: start that server "
                "(prefect server start), or unset PREFECT_API_URL to run on a local one",
                2,
            )
        if isinstance(exc, (ValueError, OSError)):
            _fail(f"{type(exc).__name__}: {exc}", 2)
        if os.environ.get("CITADEL_DEBUG"):
            raise
        _fail(f"{type(exc).__name__}: {exc} (set CITADEL_DEBUG=1 to see the traceback)", 1)


def _settings():  # noqa: ANN202
    from pydantic import ValidationError

    from citadel.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"CITADEL_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        _fail(f"bad configuration: {problems}")


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


@app.command()
def index(
    path: str = typer.Argument(..., help="A directory, glob or file of .txt .md .rst .json .jsonl .py documents."),
    collection: str | None = CollectionOption,
    full: bool = typer.Option(False, "--full", help="Re-process every document, changed or not."),
    as_json: bool = JsonOption,
) -> None:
    """Index documents incrementally: only new and changed ones are embedded, deleted ones removed."""
    from citadel.documents import list_source
    from citadel.embedders import build_embedder

    settings = _settings()
    try:
        listing = list_source(path)
        build_embedder(settings)  # an unknown model fails here, before Prefect starts
    except ConfigurationError as exc:
        _fail(str(exc))
    from flows.index_corpus import index_corpus

    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=as_json,
    )
    with bar:
        task_id = bar.add_task("starting Prefect", total=len(listing.paths) or None)

        def on_progress(done: int, total: int, description: str) -> None:
            bar.update(task_id, completed=done, total=total, description=description)

        async def go() -> dict[str, Any]:
            progress.listen(on_progress)
            return await index_corpus(path, collection=collection, full=full)

        summary = _run(go)
    if as_json:
        _print_json(summary)
    else:
        out.print(
            f"[bold]{summary['collection']}[/bold] ({summary['model']}): "
            f"{summary['added']} added, {summary['updated']} updated, {summary['unchanged']} unchanged, "
            f"{summary['deleted']} deleted, [{'red' if summary['failed'] else 'green'}]{summary['failed']} failed[/], "
            f"{summary['chunks_embedded']} chunks embedded, {summary['cache_hits']} cache hits "
            f"in {summary['duration_s']:.2f}s (flow run {summary['flow_run_id']})",
            highlight=False,
        )
        if summary["failed"]:
            out.print("failed documents are listed by [bold]citadel status[/bold]; they are retried on the next run")
    raise typer.Exit(1 if summary["failed"] else 0)


@app.command()
def search(
    query: str = typer.Argument(..., help="What to look for."),
    collection: str | None = CollectionOption,
    limit: int = typer.Option(5, "--limit", "-k", min=1, max=1000, help="How many hits."),
    threshold: float | None = typer.Option(None, "--threshold", help="Minimum score."),
    as_json: bool = JsonOption,
) -> None:
    """Search a collection for the chunks nearest to QUERY."""
    from citadel.search import search as run_search

    settings = _settings()
    hits = _run(lambda: run_search(settings, query, collection or settings.collection, limit=limit, score_threshold=threshold))
    if as_json:
        _print_json(hits)
        return
    if not hits:
        out.print("no hits")
        return
    for rank, hit in enumerate(hits, start=1):
        snippet = " ".join(str(hit["text"]).split())[:200]
        out.print(f"[bold]{rank}.[/bold] {hit['score']:.3f}  {hit['document_id']} #{hit['chunk_index']}", highlight=False)
        out.print(f"   {snippet}", highlight=False)


@app.command()
def status(as_json: bool = JsonOption) -> None:
    """Documents, chunks and vectors per collection, the last runs and the dead letters."""
    from citadel.status import collect_status

    report = _run(lambda: collect_status(_settings()))
    if as_json:
        _print_json(report)
        return
    table = Table(title="collections")
    for column in ("collection", "model", "documents", "chunks", "vectors", "dead letters"):
        table.add_column(column)
    for c in report["collections"]:
        table.add_row(c["collection"], c["model"], str(c["documents"]), str(c["chunks"]), str(c["vectors"]), str(c["dead_letters"]))
    out.print(table)
    runs = Table(title="last runs")
    for column in ("started", "collection", "status", "added", "updated", "unchanged", "deleted", "failed", "seconds"):
        runs.add_column(column)
    for r in report["runs"]:
        runs.add_row(str(r["started_at"])[:19], r["collection"], r["status"], *(str(r[k]) for k in ("added", "updated", "unchanged", "deleted", "failed")), f"{r['duration_s'] or 0:.2f}")
    out.print(runs)
    if report["dead_letters"]:
        dead = Table(title="dead letters (retried on the next run)")
        for column in ("document", "stage", "attempts", "error"):
            dead.add_column(column)
        for d in report["dead_letters"]:
            dead.add_row(d["document_id"], d["stage"], str(d["attempts"]), d["error"])
        out.print(dead)


@app.command()
def doctor(as_json: bool = JsonOption) -> None:
    """Check every configured backend and say how to fix what is unreachable."""
    from citadel.doctor import run_checks

    checks = _run(lambda: run_checks(_settings()))
    if as_json:
        _print_json(checks)
    else:
        for check in checks:
            mark = "[green]ok[/green]" if check["ok"] else "[red]FAIL[/red]"
            out.print(f"{mark}  {check['name']}: {check['detail']}", highlight=False)
            if not check["ok"]:
                out.print(f"      fix: {check['fix']}", highlight=False)
    raise typer.Exit(0 if all(c["ok"] for c in checks) else 1)


workflow_app = typer.Typer(no_args_is_help=True, help="Validate, run and inspect declarative workflows.")
app.add_typer(workflow_app, name="workflow")


def _load_definition(path: str):  # noqa: ANN202
    from citadel.workflows import WorkflowInvalid, check_workflow, load_step_modules, load_workflow

    try:
        load_step_modules(_settings().step_modules)
        return check_workflow(load_workflow(path))
    except WorkflowInvalid as exc:
        return exc
    except ConfigurationError as exc:
        _fail(str(exc))


def _print_problems(exc: Exception, as_json: bool) -> NoReturn:
    problems = [{"location": p.location, "message": p.message} for p in exc.problems]  # type: ignore[attr-defined]
    if as_json:
        _print_json({"valid": False, "problems": problems})
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
        _print_json({"valid": True, "workflow_id": definition.workflow_id, "order": order})
    else:
        out.print(f"[green]valid[/green]: {definition.workflow_id}, {len(order)} steps in order {' -> '.join(order)}")


def _print_report(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(status)
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

    status = _run(go)
    if not wait and not local and os.environ.get("PREFECT_API_URL"):
        if as_json:
            _print_json({"flow_run_id": status["flow_run_id"]})
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
    from flows.run_workflow import workflow_status

    async def go() -> dict[str, Any]:
        from prefect.exceptions import ObjectNotFound

        try:
            return await workflow_status(run_id)
        except (ObjectNotFound, ValueError):
            raise ConfigurationError(f"no flow run {run_id!r} on this Prefect server") from None

    _print_report(_run(go), as_json)


@app.command()
def serve() -> None:
    """Serve every deployment with its schedule from this one process (no work pool needed)."""
    from prefect import serve as prefect_serve

    from deployments.catalog import to_deployments

    prefect_serve(*to_deployments())


@app.command()
def setup(
    pool: str = typer.Option("citadel", "--pool", help="Process work pool to create for the deployments."),
    as_json: bool = JsonOption,
) -> None:
    """Prepare a Prefect server: register the block types, create the work pool and the embedding limit."""
    from deployments.setup import prepare_server

    done = _run(lambda: prepare_server(_settings(), pool))
    if as_json:
        _print_json(done)
    else:
        for line in done["actions"]:
            out.print(line, highlight=False)


def main() -> None:
    """Entry point of the installed ``citadel`` command."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted; run the same command again to resume (finished batches are kept)")
        sys.exit(130)
