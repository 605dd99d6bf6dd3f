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

import hashlib
import json
import os
import signal
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Set by a shell per command or per directory; they change nothing a command does.
VOLATILE_VARIABLES = frozenset({"_", "OLDPWD", "PWD", "SHLVL"})
# Read by Prefect and pydantic-settings when they are imported, besides the environment.
SETTINGS_FILES = (".env", "prefect.toml", "pyproject.toml")
PACKAGES = ("cli", "citadel", "flows", "tasks", "deployments", "api", "blocks")
MESSAGE_BYTES = 1 << 20  # one request: arguments and environment
STANDARD_STREAMS = (0, 1, 2)
SOCKET_PATH_BYTES = 107  # sun_path holds 108 bytes with the final NUL


class UnsafeDirectory(Exception):
    """The directory for warm processes' sockets is not this user's alone, or its path is too long."""


def socket_directory(create: bool = False) -> Path:
    """This user's directory for warm sockets (``$XDG_RUNTIME_DIR`` or the temp dir); refused unless
    it is a real directory owned by this user that nobody else can open."""
    import tempfile

    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / f"citadel-warm-{os.getuid()}"
    if create:
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise UnsafeDirectory(
            f"{path} must be a directory of user {os.getuid()} that only it can open (mode 700): "
            f"remove it, or set XDG_RUNTIME_DIR to a private directory"
        )
    return path


def _newest_change(root: Path) -> int:
    newest = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        stack.append(Path(entry.path))
                elif entry.name.endswith(".py"):
                    newest = max(newest, entry.stat().st_mtime_ns)
    return newest


def _changed_at(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def fingerprint(environ: dict[str, str], cwd: str) -> str:
    """What a warm process must share with a command to run it: the interpreter, the environment
    (but for what a shell changes per command), the directory, the settings files Prefect and
    Citadel read, and the installed code (Citadel's sources and the packages' directory)."""
    import sysconfig

    digest = hashlib.sha256()
    here = Path(__file__).resolve().parents[1]
    prefect_home = Path(environ.get("PREFECT_HOME", Path(environ.get("HOME", "~")).expanduser() / ".prefect"))
    parts: list[Any] = [
        sys.executable,
        sys.version,
        os.getuid(),
        cwd,
        sorted((key, value) for key, value in environ.items() if key not in VOLATILE_VARIABLES),
        [_changed_at(Path(cwd) / name) for name in SETTINGS_FILES],
        _changed_at(prefect_home / "profiles.toml"),
        [_newest_change(here / package) for package in PACKAGES if (here / package).is_dir()],
        _changed_at(Path(sysconfig.get_paths()["purelib"])),
    ]
    digest.update(json.dumps(parts).encode())
    return digest.hexdigest()[:24]


def socket_path(create: bool = False) -> Path:
    """The socket of the warm process for this environment and directory (which may not exist)."""
    path = socket_directory(create) / f"{fingerprint(dict(os.environ), os.getcwd())}.sock"
    if len(os.fsencode(path)) > SOCKET_PATH_BYTES:
        raise UnsafeDirectory(f"{path} is longer than a Unix socket's path may be: set XDG_RUNTIME_DIR to a shorter directory")
    return path


def connect(path: Path) -> socket.socket | None:
    """A connection to the warm process listening at ``path``, or None when none does."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        client.connect(str(path))
    except OSError:
        client.close()
        return None
    return client


def ask(path: Path, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any] | None:
    """One request to a warm process and its answer (``ping``, ``stop``); None when none answers."""
    client = connect(path)
    if client is None:
        return None
    with client:
        client.settimeout(timeout)
        try:
            client.send(json.dumps(request).encode())
            answer = client.recv(MESSAGE_BYTES)
        except OSError:
            return None
    return json.loads(answer) if answer else None


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
