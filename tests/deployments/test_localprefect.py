"""The local Prefect server a process starts runs Prefect's own command, through the guard that ends it with its parent."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from deployments.localprefect import guard_local_prefect_server


def test_the_guarded_command_is_prefects_own_behind_the_parent_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    guard_local_prefect_server()
    from prefect.server.api.server import SubprocessASGIServer

    started: list[dict[str, Any]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda **kwargs: started.append(kwargs))
    server = SubprocessASGIServer(port=1)
    try:
        SubprocessASGIServer.unguarded_command(server)  # type: ignore[attr-defined]
        server._run_uvicorn_command()
    finally:
        server.stop()
    prefects, ours = started
    assert prefects["args"][:3] == [sys.executable, "-m", "uvicorn"]
    assert ours["args"] == [sys.executable, "-m", "deployments.localprefect", str(os.getpid()), *prefects["args"][3:]]
    assert ours["env"] == prefects["env"] and set(ours) == set(prefects)
