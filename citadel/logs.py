"""Log lines for machines: with ``CITADEL_LOG_FORMAT=json`` one JSON object per line, with the time,
level, logger, message and the request or flow run it belongs to; text stays the default for a
terminal. Whatever the format, a secret (an API key, a bearer token, a password in a URL) is masked
before the line is written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("citadel_request_id", default=None)
"""The HTTP request being served, set by the API's middleware."""

ContextProvider = Callable[[], dict[str, str]]
_providers: list[ContextProvider] = []

_SECRETS = (
    (re.compile(r"\b(ctd_[A-Za-z0-9]+_)[A-Za-z0-9_-]+"), r"\1***"),  # an API key keeps its public id
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "eyJ***"),  # a JWT without its scheme
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@"), r"\1***@"),  # scheme://user:password@host
    (re.compile(r"(?i)\b((?:api[_-]?key|password|passwd|secret|token)\s*[=:]\s*[\"']?)[^\s\"',}]+"), r"\1***"),
)


def redact(text: str) -> str:
    """``text`` with every secret it shows masked."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def requested_format() -> str:
    """``CITADEL_LOG_FORMAT`` as the CLI and flow-run processes read it, before any Settings exist."""
    return os.environ.get("CITADEL_LOG_FORMAT", "text").lower()


def add_context(provider: ContextProvider) -> None:
    """Add a source of ids for log lines (the flow layer adds Prefect's run ids)."""
    if provider not in _providers:
        _providers.append(provider)


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the ids of what it
    belongs to, and an error's type, message and traceback as fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            line["request_id"] = request_id
        for provider in _providers:
            for key, value in provider().items():
                line.setdefault(key, value)
        for key in ("flow_run_id", "task_run_id"):  # Prefect's run loggers put them on the record
            run_id = getattr(record, key, None)
            if run_id:
                line[key] = str(run_id)
        if record.exc_info and record.exc_info[1] is not None:
            line["error"] = redact(f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
            line["traceback"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(log_format: str, text: str = "%(levelname)s:     %(name)s: %(message)s") -> logging.Formatter:
    """The formatter of ``log_format`` (``json`` or ``text``)."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(text)


def configure(log_format: str, level: str = "INFO", loggers: Iterable[str] = ("citadel",)) -> None:
    """Send ``loggers`` to stderr in ``log_format`` at ``level``, secrets masked (one handler each,
    however often called)."""
    if log_format == "json":
        logging.captureWarnings(True)  # Python's warnings become records too, not free text on stderr
        loggers = (*loggers, "py.warnings")
    for name in loggers:
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        if any(getattr(handler, "_citadel", False) for handler in logger.handlers):
            continue
        handler = logging.StreamHandler()
        handler.setFormatter(formatter(log_format))
        handler.addFilter(RedactingFilter())
        handler._citadel = True  # type: ignore[attr-defined]  # marks the handler this module installed
        logger.addHandler(handler)
        logger.propagate = False


def reformat_handlers(log_format: str, loggers: Iterable[str]) -> None:
    """Give the stream handlers already on ``loggers`` (Prefect's console) this format, leaving any
    other handler (Prefect's, which sends run logs to its API and UI) as it is."""
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler or type(handler).__name__ == "PrefectConsoleHandler":
                if log_format == "json":
                    handler.setFormatter(JsonFormatter())
                handler.addFilter(RedactingFilter())
