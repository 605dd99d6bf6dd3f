"""Prefect's environment for a command, set before Prefect is imported (it reads it then).

Kept apart from ``cli.common``, which makes the consoles on import: a warm process
(``cli.warmserver``) sets this environment before importing Prefect, and must not make consoles.
"""

from __future__ import annotations

import os


def debugging() -> bool:
    return bool(os.environ.get("CITADEL_DEBUG"))


def prefect_defaults() -> None:
    """Before Prefect is imported: no analytics from an offline machine, warnings and up only, a
    local Prefect server started by this process ends with it (``deployments.localprefect``), and
    that server is given 90 s to start instead of Prefect's 20: on a busy machine its first start
    (which creates its database) took longer, and the command failed with Prefect's timeout."""
    from deployments.localprefect import guard_local_prefect_server

    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    guard_local_prefect_server()


def quiet_prefect() -> None:
    """Before Prefect is imported: keep its console to what the command prints itself.

    Prefect prints every failed task's traceback on the console, and its temporary local server
    its shutdown noise; the command says what failed in one line. Run logs still reach the
    Prefect API, so the UI keeps them. ``CITADEL_DEBUG=1`` leaves Prefect's console as it is.
    """
    prefect_defaults()
    if not debugging():
        for handler in ("CONSOLE", "DEBUG"):
            os.environ.setdefault(f"PREFECT_LOGGING_HANDLERS_{handler}_LEVEL", "CRITICAL")
