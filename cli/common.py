"""What every command shares: consoles, settings, one-line errors and quiet Prefect logging.

Errors are one line without a traceback; ``CITADEL_DEBUG=1`` prints the traceback (and Prefect's
console logs) too.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import enum
import json
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console

from citadel import logs
from citadel.errors import CitadelError, ConfigurationError
from cli.prefectenv import debugging, quiet_prefect

if TYPE_CHECKING:
    from citadel.settings import Settings

out = Console()
err = Console(stderr=True)

class SearchModeChoice(enum.StrEnum):
    """The search modes, as the command line offers them."""

    dense = "dense"
    sparse = "sparse"
    hybrid = "hybrid"


JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of text.")
CollectionOption = typer.Option(None, "--collection", "-c", help="Vector collection (default: CITADEL_COLLECTION).")


class _WarningLine(logging.Handler):
    """Citadel's own warnings (an unreadable folder, a run waited for) as one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        warn(record.getMessage())


def show_citadel_warnings() -> None:
    """Send the warnings of Citadel's packages to stderr, one line each. They still reach the root
    logger, whose Prefect console handler shows them again only under ``CITADEL_DEBUG=1``."""
    if logs.requested_format() == "json":  # for log collectors: JSON lines on stderr
        logs.configure("json", "WARNING", ("citadel", "tasks", "flows"))
        return
    for name in ("citadel", "tasks", "flows"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _WarningLine) for h in logger.handlers):
            logger.addHandler(_WarningLine(logging.WARNING))


def exit_now(code: int | str | None) -> NoReturn:
    """End the process as the interpreter would, without its teardown of every module and object
    (half a second after a flow run, which a user waits for on every command).

    The steps of CPython's own finalisation that matter run in its order: threading's shutdown
    (thread pools told to stop, other threads joined, as multiprocessing's children do it), the
    exit handlers (Prefect's delivery of events and logs, closing stores), then the output is
    flushed and the exit code kept.
    """
    getattr(threading, "_shutdown")()  # noqa: B009 - CPython's own step, not in the typed API
    atexit._run_exitfuncs()
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing left to flush
            stream.flush()
    os._exit(code or 0)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def prefect_unreachable(exc: BaseException | None) -> bool:
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


def run(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine, turning errors into one-line messages: 2 for configuration, 1 for the rest."""
    try:
        return asyncio.run(make())
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - the command line shows one line, not a traceback
        if debugging():
            traceback.print_exc()
        fail(*describe(exc))


def describe(exc: Exception) -> tuple[str, int]:
    """The one line and exit code for an error that ends a command."""
    from citadel.outages import cause, registry_lost

    if isinstance(exc, ConfigurationError):
        return str(exc), 2
    if registry_lost(exc):  # lost mid-way: its first cause, not whatever statement failed last (such as a lock's release)
        return f"the registry was lost: {cause(exc)}; run the same command again once the registry is back (finished work is kept)", 1
    if isinstance(exc, CitadelError):
        return str(exc), 1
    if "prefect" in sys.modules and prefect_unreachable(exc):
        from prefect.settings import PREFECT_API_URL

        return (
            f"cannot reach the Prefect API at {PREFECT_API_URL.value()}: start that server "
            "(prefect server start), or unset PREFECT_API_URL to run on a local one"
        ), 2
    text = " ".join(str(exc).split())
    if isinstance(exc, (ValueError, OSError)):
        return f"{type(exc).__name__}: {text}", 2
    hint = "" if debugging() else " (set CITADEL_DEBUG=1 to see the traceback)"
    return f"{type(exc).__name__}: {text}{hint}", 1


_warned_variables = False


def settings() -> Settings:
    """The settings, or a one-line configuration error; unknown ``CITADEL_*`` variables warned of once."""
    from pydantic import ValidationError

    from citadel.settings import Settings
    from citadel.variables import unknown_variables

    global _warned_variables
    if not _warned_variables:
        _warned_variables = True
        for message in unknown_variables():
            warn(message)
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            name = f"CITADEL_{'_'.join(map(str, error['loc'])).upper()}"
            problems.append(message if not error["loc"] or name in message else f"{name}: {message}")
        fail(f"bad configuration: {'; '.join(problems)}")


def print_json(data: Any) -> None:
    """``data`` (results, lists and mappings of them, plain values) as JSON on stdout."""
    out.print_json(json.dumps(_plain(data), default=str))


def _plain(data: Any) -> Any:
    from citadel.models import Result

    if isinstance(data, Result):
        return data.to_json()
    if isinstance(data, (list, tuple)):
        return [_plain(item) for item in data]
    if isinstance(data, dict):
        return {key: _plain(value) for key, value in data.items()}
    return data


def prefect_api_url() -> str | None:
    """The Prefect API this process talks to, from Prefect's own settings: the environment, a
    ``.env`` file or the active profile (``prefect config set PREFECT_API_URL=...``)."""
    quiet_prefect()
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None
