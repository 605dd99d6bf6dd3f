"""``citadel warm``: keep a process with Prefect and the clients imported, for commands in a row."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import typer

from cli.common import JsonOption, fail, out, print_json
from cli.warmsocket import UnsafeDirectory, ask, socket_path

warm_app = typer.Typer(
    no_args_is_help=True,
    help="Start commands in 0.1 s instead of 2-3 s: a warm process imports Prefect and the clients once.",
)
READY_TIMEOUT_S = 120.0


def _socket() -> Path:
    try:
        return socket_path(create=True)
    except UnsafeDirectory as exc:
        fail(str(exc))


@warm_app.command("start")
def start(
    idle_minutes: float = typer.Option(30.0, "--idle-minutes", min=0.01, help="Exit after this long without a command."),
    as_json: bool = JsonOption,
) -> None:
    """Start the warm process for this environment and directory (commands elsewhere run as usual)."""
    path = _socket()
    status = ask(path, {"ping": True})
    if status is None:
        begun = time.monotonic()
        server = subprocess.Popen(
            [sys.executable, "-m", "cli.warmserver", "--idle-minutes", str(idle_minutes)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        while status is None:
            if server.poll() is not None:
                assert server.stderr is not None
                lines = server.stderr.read().decode(errors="replace").strip().splitlines()
                fail(f"the warm process exited at start ({server.returncode}): {lines[-1] if lines else 'no message'}")
            if time.monotonic() - begun > READY_TIMEOUT_S:
                server.kill()
                fail(f"the warm process did not answer within {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
            status = ask(path, {"ping": True})
        assert server.stderr is not None
        server.stderr.close()  # it writes nothing more: commands use their callers' streams
        status["ready_s"] = round(time.monotonic() - begun, 2)
    if as_json:
        print_json(status)
        return
    ready = f"ready in {status['ready_s']:.1f} s" if "ready_s" in status else "already running"
    out.print(
        f"warm process {status['pid']} {ready}: citadel commands in this environment and directory start from it; "
        f"it exits after {status['idle_minutes']:g} min without one (citadel warm stop)",
        highlight=False,
        soft_wrap=True,
    )


@warm_app.command("status")
def status(as_json: bool = JsonOption) -> None:
    """Whether a warm process serves this environment and directory, and what it ran last."""
    found = ask(_socket(), {"ping": True})
    if as_json:
        print_json(found or {"running": False, "pid": None})
        raise typer.Exit(0 if found else 1)
    if found is None:
        out.print("no warm process for this environment and directory (citadel warm start)")
        raise typer.Exit(1)
    out.print(f"warm process {found['pid']}: {found['served']} commands served, {found['running']} running", highlight=False)
    for command in found["recent"][-5:]:
        out.print(
            f"  {command['command'] or '-'}: exit {command['exit']} in {command['seconds']:.2f} s "
            f"({command['cpu_s']:.2f} s of CPU), {command['peak_rss_mb']:.0f} MB",
            highlight=False,
        )


@warm_app.command("stop")
def stop(as_json: bool = JsonOption) -> None:
    """Stop the warm process for this environment and directory (after the commands it runs end)."""
    found = ask(_socket(), {"stop": True})
    if found is not None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(found["pid"], 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
    if as_json:
        print_json({"stopped": found is not None, "pid": found and found["pid"]})
        return
    out.print(f"warm process {found['pid']} stopped" if found else "no warm process was running", highlight=False)
