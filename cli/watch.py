"""``citadel watch``: announce a folder's changes to Prefect, once its files settle.

Each settled batch of changes is one ``citadel.source.changed`` event; the ``index-corpus/on-change``
deployment's trigger (prefect.yaml) indexes the source when it arrives. The watcher itself never
indexes, so it stays small and a Prefect worker does the work.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import typer

from cli.common import CollectionOption, JsonOption, fail, out, prefect_api_url, run, settings
from cli.prefectenv import quiet_prefect

MAX_WAIT_MS = 60_000
"""A source that never settles (a log written without pause) is still announced once a minute."""
EXAMPLES = 5
READY_MS = 500
"""How often the watcher wakes without a change (an empty batch): the first one says it is in place."""


def watch(
    path: Path = typer.Argument(..., help="The folder (or file) to watch; its changes are indexed by the on-change deployment."),
    collection: str | None = CollectionOption,
    settle: float = typer.Option(
        2.0, "--settle", min=0.1, max=600, help="Seconds without a change before a batch of changes is announced."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Send citadel.source.changed to the Prefect server each time files under PATH change and settle.

    Needs a running Prefect server (PREFECT_API_URL) with the on-change deployment and a worker:
    the trigger there indexes the source, one run at a time. Ctrl-C stops watching."""
    if not path.exists():
        fail(f"{path} does not exist")
    source = path.resolve()
    config = settings()
    name = collection or config.collection
    api = prefect_api_url()
    if not api:
        fail(
            "citadel watch sends its events to a Prefect server, whose on-change deployment indexes the source: "
            "set PREFECT_API_URL (prefect config set PREFECT_API_URL=http://HOST:4200/api); "
            "a temporary local server would end with this command, and no worker would see the events"
        )
    run(lambda: _check_server(api))
    quiet_prefect()
    from tasks.events import emit_source_changed

    stop = _stop_on_signals()
    started = False
    try:
        for changes in _settled_changes(source, settle, config.data_dir, stop):
            if not started:  # the first answer, often an empty one, says the watcher is in place
                started = True
                _say(as_json, {"watching": str(source), "collection": name, "prefect_api_url": api, "settle_s": settle},
                     f"watching {source} for {name}: changes are announced after {settle:g} s of quiet (Ctrl-C stops)")
            if not changes:
                continue
            paths = sorted({changed for _, changed in changes})
            sent = emit_source_changed(str(source), name, len(paths), paths[:EXAMPLES])
            _say(as_json, {"event": "citadel.source.changed", "source": str(source), "collection": name,
                           "changes": len(paths), "sent": sent},
                 f"{len(paths)} changed under {source}: " + ("announced" if sent else "could not announce it (see the warning)"))
    except KeyboardInterrupt:
        pass
    _say(as_json, {"stopped": str(source)}, f"stopped watching {source}")


def _settled_changes(source: Path, settle: float, data_dir: Path, stop: threading.Event) -> Any:
    """watchfiles' batches: each yielded once no change came for ``settle`` seconds (Citadel's own
    data folder, version control and caches left out)."""
    from watchfiles import DefaultFilter, watch

    data = Path(data_dir).resolve()

    class Changes(DefaultFilter):
        def __call__(self, change: Any, path: str) -> bool:
            return super().__call__(change, path) and not Path(path).is_relative_to(data)

    return watch(
        source, watch_filter=Changes(), step=int(settle * 1000), debounce=max(MAX_WAIT_MS, int(settle * 1000)),
        stop_event=stop, yield_on_timeout=True, rust_timeout=READY_MS, ignore_permission_denied=True,
    )


async def _check_server(api: str) -> None:
    """Fail now, in one line, when the Prefect server does not answer (not at the first change)."""
    from prefect.client.orchestration import get_client

    from citadel.errors import ConfigurationError

    async with get_client() as client:
        problem = await client.api_healthcheck()
    if problem is not None:
        raise ConfigurationError(
            f"cannot reach the Prefect API at {api} ({type(problem).__name__}): start that server, or point PREFECT_API_URL at it"
        )


def _stop_on_signals() -> threading.Event:
    """An event that Ctrl-C (SIGINT) and SIGTERM (a service manager) set: the watcher sees it at its
    next wake (within READY_MS) and ends, rather than counting on an interrupt reaching Python
    through the watcher's own wait, which a loaded machine showed it may not do in time."""
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    return stop


def _say(as_json: bool, data: dict[str, Any], text: str) -> None:
    """One JSON object a line for scripts (``--json``), or one line of text."""
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()
    else:
        out.print(text, highlight=False, soft_wrap=True, markup=False)
