"""The warm process's socket: where it lives (a folder only this user can use), its name (a digest
of the environment, the directory and the installed code, so a warm process never serves stale code
or settings), and one request sent to it.

This module imports only the standard library: every command pays for it first.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import sys
from pathlib import Path
from typing import Any

# Set by a shell per command or per directory; they change nothing a command does.
VOLATILE_VARIABLES = frozenset({"_", "OLDPWD", "PWD", "SHLVL"})
# Read by Prefect and pydantic-settings when they are imported, besides the environment.
SETTINGS_FILES = (".env", "prefect.toml", "pyproject.toml")
PACKAGES = ("cli", "citadel", "flows", "tasks", "deployments", "orchestration", "api", "blocks")
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
