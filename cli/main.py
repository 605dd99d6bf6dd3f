"""``citadel``: index a corpus, search it, and check on the system.

Human output by default, ``--json`` for scripts. Exit codes: 0 success, 1 a run with failed
documents (or an unhealthy backend for ``doctor``), 2 bad usage or configuration.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from citadel import progress
from citadel.errors import ConfigurationError
from citadel.models import RunCounts, StatusReport
from cli.audit import audit
from cli.backup import backup_app
from cli.collections import collection_app
from cli.common import (
    CollectionOption,
    JsonOption,
    SearchModeChoice,
    err,
    exit_now,
    fail,
    out,
    prefect_api_url,
    print_json,
    run,
    settings,
    show_citadel_warnings,
    warn,
)
from cli.prefectenv import prefect_defaults, quiet_prefect
from cli.service import apikey_app, serve_api, token_app
from cli.warm import warm_app
from cli.watch import watch
from cli.workflows import workflow_app

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Citadel: embed, cache, index and search documents.",
)
app.add_typer(workflow_app, name="workflow")
app.add_typer(collection_app, name="collection")
app.add_typer(apikey_app, name="apikey")
app.add_typer(token_app, name="token")
app.add_typer(backup_app, name="backup")
app.add_typer(warm_app, name="warm")
app.command("api")(serve_api)
app.command("watch")(watch)
app.command("audit")(audit)


def _table(title: str, *columns: str) -> Table:
    """A table that fits 80 columns: light borders, short numeric headers, long names folded
    (never cut: a name must stay whole to be copied)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title_justify="left")
    for column in columns:
        fixed = column in FIXED_COLUMNS
        table.add_column(column, justify="right" if fixed and column not in ("started", "status") else "left",
                         overflow="fold", no_wrap=fixed)
    return table


FIXED_COLUMNS = {"docs", "chunks", "vectors", "dead", "secs", "tries", "started", "status", "stage", *(t for _, t in RunCounts.columns())}


@app.command()
def index(
    path: str = typer.Argument(
        ..., help="A directory, glob or file of documents (text, Markdown, JSON, PDF, HTML, Office, EPUB), or s3://bucket/prefix."
    ),
    collection: str | None = CollectionOption,
    full: bool = typer.Option(False, "--full", help="Re-process every document, changed or not."),
    blue_green: bool = typer.Option(
        False, "--blue-green", help="Build a new version of the collection while searches read the old one, then switch."
    ),
    always_flow: bool = typer.Option(
        False, "--always-flow",
        help="Start a Prefect flow run even when nothing changed (by default such a run is answered without one).",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Index documents incrementally: only new and changed ones are embedded, deleted ones removed.

    A source with nothing to do (every document indexed as it is, nothing deleted, failed or
    drifted) is answered without starting Prefect; any work runs as the index-corpus flow."""
    from citadel.documents import list_source
    from citadel.embedders import build_embedder
    from citadel.indexing import answer_unchanged, check_before_run

    show_citadel_warnings()
    config = settings()
    name = collection or config.collection
    try:
        listing = list_source(path, [config.data_dir], settings=config)
        build_embedder(config)  # an unknown model fails here, before Prefect starts
    except ConfigurationError as exc:
        fail(str(exc))
    run(lambda: check_before_run(config, name, new_version=blue_green))  # the registry, the store's lock, the collection's model
    if not (full or blue_green or always_flow):
        unchanged = run(lambda: answer_unchanged(config, path, name))
        if unchanged is not None:
            _report_index(unchanged.to_json(), as_json)
    quiet_prefect()
    from flows.index_corpus import index_corpus

    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=as_json or not err.is_terminal,
    )
    with bar:
        task_id = bar.add_task("starting Prefect", total=listing.count or None)

        def on_progress(done: int, total: int, description: str) -> None:
            bar.update(task_id, completed=done, total=total or None, description=description)

        async def go() -> dict[str, Any]:
            progress.listen(on_progress)
            return await index_corpus(path, collection=name, full=full, blue_green=blue_green)

        summary = run(go)
    _report_index(summary, as_json)


def _report_index(summary: dict[str, Any], as_json: bool) -> NoReturn:
    """Print an index run's summary and exit: 1 when documents failed or none were found."""
    nothing_read = summary["documents_seen"] == 0
    if as_json:
        print_json(summary)
    else:
        how = f"flow run {summary['flow_run_id']}" if summary["flow_run_id"] else "nothing to do: no Prefect flow run"
        out.print(
            f"[bold]{summary['collection']}[/bold] ({summary['model']}): {_counted(summary)} "
            f"in {summary['duration_s']:.2f}s ({how})",
            highlight=False, soft_wrap=True,
        )
        if summary["failed"]:
            out.print("failed documents are listed by [bold]citadel status[/bold]; they are retried on the next run")
        if summary["switch"]:
            switched = summary["switch"]
            alias = switched["collection"]
            out.print(f"{alias} now reads {switched['live']}" +
                      (f"; {switched['previous']} is kept for `citadel collection rollback {alias}`" if switched["previous"] else ""),
                      highlight=False)
        for message in summary["warnings"]:
            warn(message)
    raise typer.Exit(1 if summary["failed"] or nothing_read else 0)


def _counted(summary: dict[str, Any]) -> str:
    """``3 added, 0 updated, ... 1 failed, 29 chunks embedded, 0 cache hits``: every counter but
    the chunks written and reused, and repairs only when there were some; failures in colour."""
    said = []
    for name in RunCounts.names():
        value = summary[name]
        if name in ("chunks_written", "chunks_reused") or (name == "repaired" and not value):
            continue
        text = f"{value} {name.replace('_', ' ')}"
        said.append(f"[{'red' if value else 'green'}]{text}[/]" if name == "failed" else text)
    return ", ".join(said)


@app.command()
def search(
    query: str = typer.Argument(..., help="What to look for."),
    collection: str | None = CollectionOption,
    limit: int = typer.Option(5, "--limit", "-k", min=1, max=1000, help="How many hits."),
    threshold: float | None = typer.Option(None, "--threshold", help="Minimum score."),
    chunks: bool = typer.Option(False, "--chunks", help="Every chunk found, not only each document's best."),
    mode: SearchModeChoice | None = typer.Option(
        None, "--mode", help="dense (the embedding), sparse (the query's words, BM25) or hybrid (both, fused); "
        "default: CITADEL_SEARCH_MODE (hybrid).", case_sensitive=False,
    ),
    as_json: bool = JsonOption,
) -> None:
    """Search a collection for the documents that best match QUERY (each shown by its best chunk)."""
    from citadel.search import check_query
    from citadel.search import search as run_search

    try:
        check_query(query)
    except ConfigurationError as exc:
        fail(str(exc))
    config = settings()
    found = run(lambda: run_search(
        config, query, collection or config.collection, limit=limit, score_threshold=threshold, by_document=not chunks,
        mode=mode.value if mode else None,
    ))
    if as_json:
        print_json(found.hits)  # the hits, as scripts read them; a mode other than the one asked is said on stderr
        return
    if not found.hits:
        out.print(f"no hits ({found.mode} search)")
        return
    for warning in found.warnings:
        err.print(f"warning: {warning}", highlight=False, markup=False)
    reranked = ", reranked" if found.reranked else ""
    out.print(f"[dim]{found.mode} search{reranked}, {'chunks' if chunks else 'documents'} by best match[/dim]")
    for rank, hit in enumerate(found.hits, start=1):
        snippet = " ".join(str(hit["text"]).split())[:200]
        out.print(f"[bold]{rank}.[/bold] {hit['score']:.3f}  {hit['document_id']} #{hit['chunk_index']}", highlight=False)
        where = " · ".join(part for part in (
            hit.get("title"), f"page {hit['page']}" if hit.get("page") else None, hit.get("section"),
        ) if part)
        if where:
            out.print(f"   {where}", highlight=False, markup=False)
        out.print(f"   {snippet}", highlight=False)


async def _status(config: Any) -> StatusReport:
    from citadel.ops import collect_status

    report = await collect_status(config)
    if any(run["flow_run_id"] for run in report["crashed_runs"]):
        quiet_prefect()
        from prefect.settings import PREFECT_API_URL

        if PREFECT_API_URL.value():  # the temporary local server keeps no runs worth marking
            from tasks.crashed import mark_flow_runs_crashed

            await mark_flow_runs_crashed(report["crashed_runs"])
    return report


@app.command()
def status(as_json: bool = JsonOption) -> None:
    """Documents, chunks and vectors per collection, the last runs and the dead letters."""
    config = settings()
    show_citadel_warnings()
    report = run(lambda: _status(config))
    if as_json:
        print_json(report)
        return
    table = _table("collections", "collection and model", "docs", "chunks", "vectors", "dead")
    for c in report["collections"]:
        live_as = f" [green](live as {', '.join(c['aliases'])})[/green]" if c["aliases"] else ""
        table.add_row(
            f"{c['collection']}{live_as}\n[dim]{c['model']}[/dim]", *(str(c[k]) for k in ("documents", "chunks", "vectors", "dead_letters"))
        )
    out.print(table)
    for c in report["collections"]:
        if c["drift"]:
            warn(
                f"{c['collection']}: the vector store does not match the registry "
                f"({c['missing']} points missing, {c['stray']} unknown, {c['awaiting_repair']} documents awaiting repair); "
                f"run `citadel verify --repair --collection {c['collection']}`"
            )
    counters = RunCounts.columns()
    runs = _table("last runs", "started", "collection", "status", *(title for _, title in counters), "secs")
    for r in report["runs"]:
        runs.add_row(
            str(r["started_at"])[5:16], r["collection"], r["status"],
            *(str(r[name]) for name, _ in counters), f"{r['duration_s'] or 0:.2f}",
        )
    out.print(runs)
    if report["dead_letters"]:
        dead = _table("dead letters (retried on the next run)", "document", "stage", "tries", "error")
        for d in report["dead_letters"]:
            dead.add_row(d["document_id"], d["stage"], str(d["attempts"]), d["error"])
        out.print(dead)


@app.command()
def doctor(as_json: bool = JsonOption) -> None:
    """Check every configured backend, and that each collection's store matches the registry."""
    from citadel.ops import run_checks
    from tasks.limits import needs_limit

    config = settings()
    api = prefect_api_url()
    checks = run(lambda: run_checks(config, api))
    if api and needs_limit(config) and all(c["ok"] for c in checks if c["name"] == "prefect"):
        checks.append(run(lambda: _slot_check(config)))
    if as_json:
        print_json(checks)
    else:
        for check in checks:
            mark = "[green]ok[/green]" if check["ok"] else "[red]FAIL[/red]"
            out.print(f"{mark}  {check['name']}: {check['detail']}", highlight=False)
            if not check["ok"]:
                out.print(f"      fix: {check['fix']}", highlight=False)
    raise typer.Exit(0 if all(c["ok"] for c in checks) else 1)


async def _slot_check(config: Any) -> Any:
    """Who holds the embedding backend's slots on the Prefect server, and which of them are gone."""
    from prefect.client.orchestration import get_client

    from tasks.limits import limit_name
    from tasks.slots import slot_check

    async with get_client() as client:
        return await slot_check(client, limit_name(config))


@app.command()
def verify(
    collection: str | None = CollectionOption,
    repair: bool = typer.Option(False, "--repair", help="Delete unknown points and write the missing ones again."),
    as_json: bool = JsonOption,
) -> None:
    """Compare every point id of the vector store with the registry (each run only samples them)."""
    from citadel.indexing import verify as run_verify

    config = settings()
    show_citadel_warnings()
    reports = run(lambda: run_verify(config, collection, repair=repair))
    if as_json:
        print_json(reports)
        raise typer.Exit(0 if all(report.healthy for report in reports) else 1)
    for report in reports:
        check = report.check
        points = "no collection" if check.points is None else f"{check.points} points"
        state = "[green]ok[/green]" if not check.drift and not report.awaiting_repair else "[red]drift[/red]"
        out.print(
            f"{state}  {check.collection}: {check.expected} chunks in the registry, {points} in the store, "
            f"{check.missing} missing, {check.stray} unknown to the registry",
            highlight=False,
        )
        for summary in report.reindexed:
            out.print(
                f"      re-indexed {summary.source}: {summary.repaired} documents repaired, "
                f"{summary.chunks_embedded} chunks embedded, {summary.cache_hits} from the cache",
                highlight=False,
            )
        final = report.after or report
        if report.after is not None:
            out.print(f"      after repair: {final.check.missing} missing, {final.check.stray} unknown", highlight=False)
        for source, count in final.awaiting_repair.items():
            out.print(
                f"      {count} documents of {source} await repair: index that source again (inline documents: send them again)",
                highlight=False,
            )
        if not repair and not report.healthy:
            out.print(f"      fix: citadel verify --repair --collection {check.collection}", highlight=False)
    raise typer.Exit(0 if all(report.healthy for report in reports) else 1)


@app.command()
def serve() -> None:
    """Serve every deployment with its schedule from this one process (no work pool needed)."""
    prefect_defaults()
    from prefect import serve as prefect_serve

    from deployments.catalog import to_deployments

    prefect_serve(*to_deployments())


@app.command()
def setup(
    pool: str = typer.Option("citadel", "--pool", help="Process work pool to create for the deployments."),
    result_storage: str | None = typer.Option(
        None, "--result-storage", help="A folder every worker and reader can reach (a shared mount), where runs keep their results."
    ),
    notify: str | None = typer.Option(
        None, "--notify", help="A notification block (BLOCK_TYPE/NAME, such as slack-webhook/ops) that failed index runs are sent to."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Prepare a Prefect server: register the block types, create the work pool and the embedding limit."""
    quiet_prefect()
    from deployments.setup import prepare_server

    config = settings()
    done = run(lambda: prepare_server(config, pool, result_storage, notify))
    if as_json:
        print_json(done)
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
    except SystemExit as exc:
        exit_now(exc.code)
