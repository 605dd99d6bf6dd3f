"""``citadel collection``: the versions of blue-green collections, and switching between them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import typer

from citadel.models import CollectionVersions, SwitchReport
from cli.common import JsonOption, out, print_json, run, settings

collection_app = typer.Typer(
    no_args_is_help=True,
    help="Blue-green collections: list versions, switch, roll back, prune (build one with `citadel index --blue-green`).",
)
if TYPE_CHECKING:
    from citadel.resources import Resources

T = TypeVar("T")
NameArgument = typer.Argument(..., help="The collection name searches use (the alias over its versions).")


def _with_resources(work: Callable[[Resources], Awaitable[T]], *, lock: str | None = None) -> T:
    """``work`` over the configured backends; with ``lock``, holding that collection's blue-green lock."""
    from citadel.indexing.bluegreen import locked
    from citadel.resources import Resources  # the backends' clients load only when a command runs

    async def go() -> T:
        resources = Resources(settings())
        try:
            if lock is None:
                return await work(resources)
            async with locked(resources, lock):
                return await work(resources)
        finally:
            await resources.aclose()

    result: T = run(go)
    return result


def _said(report: SwitchReport) -> str:
    before = f" (was {report.previous})" if report.previous else " (it replaced the plain collection)" if report.replaced_plain else ""
    return f"{report.collection} now reads {report.live}{before}: {report.points} points"


@collection_app.command("list")
def list_versions(collection: str = NameArgument, as_json: bool = JsonOption) -> None:
    """The versions of COLLECTION, with their points and which one searches read."""
    from citadel.indexing.bluegreen import versions

    found: CollectionVersions = _with_resources(lambda r: versions(r, collection))
    if as_json:
        print_json(found)
        return
    if not found.versions:
        kind = "a plain collection" if found.plain else "no collection"
        out.print(f"{collection} has no versions ({kind}); `citadel index PATH --collection {collection} --blue-green` builds one")
        return
    for version in found.versions:
        mark = "[green]live[/green]" if version.live else "    "
        out.print(f"{mark}  {version.name}  {version.points} points", highlight=False)


@collection_app.command("switch")
def switch_version(
    collection: str = NameArgument,
    version: str = typer.Argument(..., help="The version to make live, e.g. docs__v3."),
    force: bool = typer.Option(False, "--force", help="Switch even when the version fails its check."),
    as_json: bool = JsonOption,
) -> None:
    """Point COLLECTION at VERSION in one atomic step, after checking it (written to `citadel audit`)."""
    from citadel.audit import cli_actor
    from citadel.indexing.bluegreen import switch

    actor = cli_actor()
    report: SwitchReport = _with_resources(lambda r: switch(r, collection, version, check=not force, actor=actor), lock=collection)
    print_json(report) if as_json else out.print(_said(report), highlight=False)


@collection_app.command("rollback")
def rollback_version(collection: str = NameArgument, as_json: bool = JsonOption) -> None:
    """Point COLLECTION back at the version before the live one (written to `citadel audit`)."""
    from citadel.audit import cli_actor
    from citadel.indexing.bluegreen import rollback

    actor = cli_actor()
    report: SwitchReport = _with_resources(lambda r: rollback(r, collection, actor=actor), lock=collection)
    print_json(report) if as_json else out.print(_said(report), highlight=False)


@collection_app.command("prune")
def prune_versions(
    collection: str = NameArgument,
    keep: int = typer.Option(1, "--keep", min=0, help="Versions older than the live one to keep for rollback."),
    as_json: bool = JsonOption,
) -> None:
    """Delete the versions of COLLECTION that are neither live nor kept for rollback."""
    from citadel.indexing.bluegreen import prune

    deleted: list[str] = _with_resources(lambda r: prune(r, collection, keep), lock=collection)
    if as_json:
        print_json({"collection": collection, "deleted": deleted})
        return
    out.print(f"deleted {', '.join(deleted)}" if deleted else "nothing to delete", highlight=False)
