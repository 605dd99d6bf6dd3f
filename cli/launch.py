"""The ``citadel`` entry point: run a command in a warm process when one serves this environment.

Importing Prefect, the store's client and the flows takes 2 to 3 s of CPU before a command does
anything. ``citadel warm start`` keeps a process with them imported (``cli.warmserver``); a
command then sends its arguments, environment, directory and terminal to it, and runs in a fork of
it, with its output, exit code and Ctrl-C as if it ran here. A warm process serves only commands
whose environment, directory and installed code are the ones it imported with (the socket's name
is their digest), so it never runs stale code or settings; anything else runs here, as always.

This module imports only the standard library: it is what every command pays first.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

from cli.warmsocket import MESSAGE_BYTES, STANDARD_STREAMS, UnsafeDirectory, connect, socket_path


def _open_streams() -> list[int]:
    """The standard streams this process has (a job may run with stdin closed)."""
    opened = []
    for fd in STANDARD_STREAMS:
        try:
            os.fstat(fd)
        except OSError:
            continue
        opened.append(fd)
    return opened


def _messages(client: socket.socket) -> Iterator[dict[str, Any]]:
    while True:
        try:
            data = client.recv(MESSAGE_BYTES)
        except InterruptedError:  # pragma: no cover - retried by Python itself (PEP 475)
            continue
        if not data:
            return
        yield json.loads(data)


def run_warm(argv: list[str]) -> int | None:
    """Run ``argv`` in the warm process for this environment; its exit code, or None to run it here."""
    try:
        path = socket_path()
    except (UnsafeDirectory, OSError):
        return None
    client = connect(path)
    if client is None:
        return None
    with client:
        streams = _open_streams()
        request = {"run": argv, "cwd": os.getcwd(), "env": dict(os.environ), "streams": streams}
        try:
            socket.send_fds(client, [json.dumps(request).encode()], streams)
        except OSError:
            return None
        messages = _messages(client)
        started = next(messages, None)
        if not started or "pid" not in started:  # refused (it could not fork): run here
            return None
        child = int(started["pid"])

        def forward(signum: int, _frame: Any) -> None:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(signum, forward)
        ended = next(messages, None)
    if not ended or "exit" not in ended:
        sys.stderr.write("error: the warm process ended before the command did; run it again (citadel warm stop)\n")
        return 1
    return int(ended["exit"])


def main() -> None:
    """``citadel``: through a warm process when one serves this environment, else here."""
    argv = sys.argv
    if len(argv) > 1 and argv[1] != "warm":
        code = run_warm(argv)
        if code is not None:
            sys.stdout.flush()
            os._exit(code)
    from cli.main import main as run_here

    run_here()
