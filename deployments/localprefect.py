"""The temporary local Prefect server a process starts (no ``PREFECT_API_URL``) ends with that process.

Prefect starts it on first use as a child, ``python -m uvicorn ... prefect.server.api.server:create_app``
(``SubprocessASGIServer``), and stops it only from an exit handler: a process killed with SIGKILL
left its server running with parent 1. :func:`guard_local_prefect_server` makes Prefect start the
same command through this module, whose :func:`main` watches the parent and stops the server once
the parent is gone. A watchdog, not a parent-death signal: ``PR_SET_PDEATHSIG`` fires when the
*thread* that started the child ends, and Prefect may start it from a short-lived thread.

The hook is put in place without importing Prefect's server (1.5 s): on the import of
``prefect.server.api.server``, or at once if it is already imported. Forks (the warm process's
commands) inherit it, and each fork is the parent its own server watches.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

SERVER_MODULE = "prefect.server.api.server"
POLL_S = 0.5
"""How often the server checks that the process that started it is still there."""
STOP_S = 3.0
"""How long the server has to stop cleanly once its parent is gone, before it exits at once."""


def _guarded_command(self: Any) -> subprocess.Popen[Any]:
    """Prefect's ``SubprocessASGIServer._run_uvicorn_command`` (Prefect 3.7), started through :func:`main`."""
    import prefect
    from prefect.settings import get_current_settings

    server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    return subprocess.Popen(
        args=[
            sys.executable, "-m", __name__, str(os.getpid()),
            "--app-dir", str(prefect.__module_path__.parent), "--factory", "prefect.server.api.server:create_app",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on",
        ],
        env={**os.environ, **server_env, **get_current_settings().to_environment_variables(exclude_unset=True)},
    )


def _patch(module: ModuleType) -> None:
    server = module.SubprocessASGIServer
    if server._run_uvicorn_command is not _guarded_command:
        server.unguarded_command = server._run_uvicorn_command  # Prefect's own, for the test that keeps the two in step
        server._run_uvicorn_command = _guarded_command


class _PatchingLoader(importlib.abc.Loader):
    """Prefect's server module loaded as usual, then patched."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        _patch(module)


class _OnServerImport(importlib.abc.MetaPathFinder):
    """Finds Prefect's server module with the other finders and hands it to :class:`_PatchingLoader`."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != SERVER_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def guard_local_prefect_server() -> None:
    """Make every local Prefect server this process starts end when this process ends (idempotent)."""
    module = sys.modules.get(SERVER_MODULE)
    if module is not None:
        _patch(module)
    elif not any(isinstance(finder, _OnServerImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OnServerImport())


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's own shutdown
    time.sleep(STOP_S)
    os._exit(0)


def main(argv: list[str]) -> None:
    """In the server's process: ``PARENT_PID UVICORN_ARGS...``; serve until the parent is gone."""
    parent = int(argv[0])
    if os.getppid() != parent:
        sys.exit(0)  # gone before this process started
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="parent-watch").start()
    import runpy

    sys.argv = ["uvicorn", *argv[1:]]
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
