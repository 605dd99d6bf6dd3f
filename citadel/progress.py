"""A progress hook: long work reports to whoever listens (the CLI draws a bar), or to no one."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token

ProgressCallback = Callable[[int, int, str], None]
"""Called with (done, total, description)."""

_listener: ContextVar[ProgressCallback | None] = ContextVar("citadel_progress", default=None)


def listen(callback: ProgressCallback | None) -> Token[ProgressCallback | None]:
    """Send progress reports of work started in this context to ``callback`` (the token resets it)."""
    return _listener.set(callback)


def report(done: int, total: int, description: str = "") -> None:
    callback = _listener.get()
    if callback is not None:
        callback(done, total, description)
