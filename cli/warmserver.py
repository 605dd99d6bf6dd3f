"""A warm process: Prefect, the clients and the flows imported once; each command a fork of it.

It serves one environment and directory (``cli.warmsocket.fingerprint``) on a Unix socket that only
its user can open, and only to processes of that user. A command's request carries its
arguments, environment, directory and standard streams; the fork takes them on, runs the command
as ``citadel`` would, and the exit status goes back to the caller, which forwards its signals to
the fork. One thread, no event loop, no connection opened before a fork: a fork starts clean. It
exits after a time without commands, on ``citadel warm stop``, or on SIGTERM.

    python -m cli.warmserver --idle-minutes 30
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from cli.warmsocket import MESSAGE_BYTES, STANDARD_STREAMS, socket_path

# What a command would import before doing anything. The CLI's own modules are not among them:
# they make their consoles on import, which must see the caller's terminal, not this process's.
PRELOADED = (
    "flows.index_corpus",
    "flows.index_sharded",
    "flows.similarity_search",
    "flows.embed_texts",
    "flows.run_workflow",
    "orchestration.workflow_runs",
    "deployments.catalog",
    "qdrant_client",
    "citadel.indexing.run",
    "citadel.embedders",
    "citadel.ops.status",
    "citadel.ops.doctor",
    "citadel.store.vectorstore",
    "citadel.apisettings",
    "aiosqlite",
    # What Prefect imports only once a flow runs: FastAPI's encoder for the parameters alone is
    # 0.2 s of CPU in every fork otherwise.
    "fastapi.encoders",
    "prefect.task_engine",
    "prefect.concurrency._sync",
    "prefect.utilities.visualization",
    "anyio._backends._asyncio",
    "anyio.streams.tls",
    "encodings.idna",
    "typer",
    "rich.console",
    "rich.progress",
    "rich.table",
    "rich.box",
    "rich.json",
)
RECENT = 20
# The signals a caller forwards, and the one this process notes its children's ends by.
HELD_AT_FORK = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD}


class WarmServer:
    """Accept commands on ``path`` and run each in a fork; answer ``ping`` and ``stop``."""

    def __init__(self, path: Path, key: str, idle_s: float) -> None:
        self.path, self.key, self.idle_s = path, key, idle_s
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, tuple[socket.socket | None, float, str]] = {}  # pid: (caller, start, command)
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.served = 0
        self.started = time.time()
        self.last_active = time.monotonic()
        self.stopping = False

    def bind(self) -> None:
        """Listen at the path, taking over a socket file whose process is gone."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self.inode = os.stat(self.path).st_ino  # to remove the file at exit only if it is still ours
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_w, False)
        os.set_blocking(self.wakeup_r, False)
        signal.set_wakeup_fd(self.wakeup_w)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)  # noticed through the wakeup pipe
        self.selector.register(self.wakeup_r, selectors.EVENT_READ, "signal")

    def serve(self) -> None:
        while not (self.stopping and not self.children):
            idle_left = self.idle_s - (time.monotonic() - self.last_active)
            if not self.children and idle_left <= 0:
                break
            for key, _ in self.selector.select(timeout=max(idle_left, 0.05) if not self.children else None):
                if key.data == "accept":
                    self._accept()
                elif key.data == "signal":
                    self._signalled()
                else:
                    self._caller_readable(key.fileobj, key.data)  # type: ignore[arg-type]
        self.close()

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self.inode:
                self.path.unlink()
        self.listener.close()

    def _accept(self) -> None:
        try:
            caller, _ = self.listener.accept()
        except BlockingIOError:
            return
        caller.setblocking(True)
        _pid, uid, _gid = struct.unpack("3i", caller.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if uid != os.getuid():  # the directory is private; this holds even if it were not
            caller.close()
            return
        self.last_active = time.monotonic()
        try:
            data, fds, _flags, _address = socket.recv_fds(caller, MESSAGE_BYTES, len(STANDARD_STREAMS))
        except OSError:
            caller.close()
            return
        request = json.loads(data) if data else {}
        if "run" in request:
            self._run(caller, request, fds)
            return
        for fd in fds:
            os.close(fd)
        if request.get("stop"):
            self.stopping = True
            self.selector.unregister(self.listener)
        with contextlib.suppress(OSError):
            caller.send(json.dumps(self.status()).encode())
        caller.close()

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "key": self.key,
            "socket": str(self.path),
            "cwd": os.getcwd(),
            "started": self.started,
            "idle_minutes": self.idle_s / 60,
            "served": self.served,
            "running": len(self.children),
            "recent": list(self.recent),
            "stopping": self.stopping,
        }

    def _run(self, caller: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        # Until the fork has the command's own handlers, a signal for it would reach this process's
        # (which only note it): held back, it is delivered once they are in place.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_AT_FORK)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            for fd in fds:
                os.close(fd)
            with contextlib.suppress(OSError):
                caller.send(json.dumps({"refused": "could not fork"}).encode())
            caller.close()
            return
        if pid == 0:
            self._become_command(request, fds, caller, held)
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        for fd in fds:
            os.close(fd)
        self.served += 1
        command = next((arg for arg in request["run"][1:] if not arg.startswith("-")), "")
        self.children[pid] = (caller, time.monotonic(), command)
        self.selector.register(caller, selectors.EVENT_READ, pid)
        with contextlib.suppress(OSError):
            caller.send(json.dumps({"pid": pid}).encode())

    def _become_command(
        self, request: dict[str, Any], fds: list[int], caller: socket.socket, mask: Iterable[int]
    ) -> NoReturn:
        """In the fork: take on the caller's streams, directory and environment, and run its command."""
        code: int | str | None = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # what arrived meanwhile is delivered now
            for held in (self.listener, caller, *(child for child, _, _ in self.children.values())):
                if held is not None:
                    held.close()
            self.selector.close()
            os.close(self.wakeup_r)
            os.close(self.wakeup_w)
            streams = dict(zip(request["streams"], fds, strict=True))
            for fd in STANDARD_STREAMS:
                given = streams.get(fd)
                if given is None:
                    given = os.open(os.devnull, os.O_RDWR)
                os.dup2(given, fd)
                os.close(given)
            for stream in (sys.stdout, sys.stderr):
                if isinstance(stream, io.TextIOWrapper):  # buffered by line on a terminal, as at a start
                    stream.reconfigure(line_buffering=stream.isatty())
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv = list(request["run"])
            from cli.main import main

            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
        except KeyboardInterrupt:
            code = 130
        except BaseException:  # noqa: BLE001 - the command's own errors are already one line
            import traceback

            traceback.print_exc()
            code = 1
        from cli.common import exit_now

        exit_now(code)

    def _signalled(self) -> None:
        with contextlib.suppress(BlockingIOError):
            received = os.read(self.wakeup_r, 512)
            if signal.SIGTERM in received or signal.SIGINT in received:
                self.stopping = True
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(self.listener)
        while self.children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._ended(pid, status, usage)

    def _ended(self, pid: int, status: int, usage: Any) -> None:
        caller, start, command = self.children.pop(pid, (None, 0.0, ""))
        code = os.waitstatus_to_exitcode(status)
        exit_code = code if code >= 0 else 128 - code  # killed by a signal: as a shell reports it
        seconds = time.monotonic() - start
        self.recent.append(
            {"command": command, "exit": exit_code, "seconds": round(seconds, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
             "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
        )
        self.last_active = time.monotonic()
        if caller is not None:
            self.selector.unregister(caller)
            with contextlib.suppress(OSError):
                caller.send(json.dumps({"exit": exit_code}).encode())
            caller.close()

    def _caller_readable(self, caller: socket.socket, pid: int) -> None:
        """A caller says nothing after its request: readable means it is gone (killed): so is its command."""
        with contextlib.suppress(OSError):
            if caller.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        self.selector.unregister(caller)
        _, start, command = self.children[pid]
        self.children[pid] = (None, start, command)
        caller.close()


def preload() -> None:
    """Import what commands need, as a command would (Prefect quietened first), then freeze it all
    out of the garbage collector's reach: forks then share those pages instead of copying them."""
    from cli.prefectenv import quiet_prefect

    quiet_prefect()
    import importlib

    for module in PRELOADED:
        importlib.import_module(module)
    gc.collect()
    gc.freeze()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-minutes", type=float, default=30.0)
    args = parser.parse_args()
    path = socket_path(create=True)  # of the environment as given, before anything sets a default
    preload()
    server = WarmServer(path, path.stem, args.idle_minutes * 60)
    server.bind()
    server.serve()


if __name__ == "__main__":
    main()
