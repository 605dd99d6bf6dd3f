"""Parsers run in worker processes apart from the indexing run, each file under a time limit and each
worker under an address-space limit: a hostile or huge file (a PDF bomb, a zip bomb, a crashing
parser) becomes a failure with its reason while the batch goes on, and the run's memory stays bounded.

A worker process holds about 250 MB of address space once it has imported the parsers (Python 3.11 with
PDFium, Lexbor, lxml, python-docx, python-pptx, openpyxl and numpy on one BLAS thread), so
``CITADEL_PARSE_MAX_MEMORY_MB`` (the whole worker's limit, default 1024) leaves about 770 MB to parse
one file, and a setting under ``PARSE_MEMORY_FLOOR_MB`` is refused. Workers are spawned, not forked
from the run, so a script that indexes keeps its own code under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import logging
import multiprocessing
import os
import pickle
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pebble

from citadel.documents.parsed import ParsedFile, ParseError
from citadel.errors import ConfigurationError
from citadel.settings import PARSE_MEMORY_FLOOR_MB

if TYPE_CHECKING:
    from citadel.settings import Settings

logger = logging.getLogger(__name__)

MB = 1024 * 1024
MAX_TASKS = 100  # files a worker parses before it is replaced, which bounds what a parser leaks
NEAR_LIMIT = 0.75  # a file that takes a worker past this share of its limit ran out of memory, if it failed
REPLACE_EXIT = 75  # a worker's exit asking to be replaced before it parses the file it was given
STALL_MARGIN_S = 60.0  # past the time limit, no answer at all from the pool means it lost a task
# Imported by each worker before its limit is set, so that no file's time pays for them.
PRELOAD = (
    "citadel.documents.formats.pdf", "citadel.documents.formats.html", "citadel.documents.formats.office",
    "citadel.documents.formats.epub", "docx", "pptx", "openpyxl",
)
# numpy (under openpyxl) would start a BLAS thread, and reserve its buffers, per core.
ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

Parser = Callable[[str, bytes], ParsedFile]
ParseJob = tuple[str, bytes, str]  # a file's suffix, its bytes, and its name for the log
FailureKind = Literal["timeout", "memory", "crashed", "unreadable", "error"]


@dataclass(frozen=True)
class ParseFailure:
    """Why a file could not be parsed; ``reason`` is its dead letter's."""

    reason: str
    kind: FailureKind


def timeout_reason(timeout_s: float) -> str:
    return (f"took longer than {timeout_s:g} s to parse (CITADEL_PARSE_TIMEOUT_S); "
            "a genuine file this slow needs a larger limit, a hostile one stays here")


def memory_reason(max_memory_mb: int) -> str:
    return f"needed more than {max_memory_mb} MB of memory to parse (CITADEL_PARSE_MAX_MEMORY_MB)"


def crash_reason(exitcode: int | None) -> str:
    """The reason for a worker that died: by a signal (a negative exit code) or by exiting."""
    how = f"exit code {exitcode}"
    if exitcode is not None and exitcode < 0:
        how = f"signal {-exitcode}" + (f", {signal.Signals(-exitcode).name}" if -exitcode in signal.valid_signals() else "")
    return f"the parser crashed ({how}) on this file"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one short line."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_worker_memory_mb = 0  # the limit this worker was given, for its reasons
_worker_limit = 0  # the address-space limit it runs under, in bytes (0: none could be set)
_worker_spent = False  # a file took this worker near its limit: its heap may stay bloated


def start_worker(max_memory_mb: int, preload: tuple[str, ...]) -> None:
    """A worker's initializer: import the parsers, then cap the process's address space, so that a
    parser needing more gets MemoryError (or dies) instead of taking the machine's memory."""
    global _worker_memory_mb, _worker_limit
    for name in ONE_THREAD:
        os.environ.setdefault(name, "1")
    for module in preload:
        try:
            importlib.import_module(module)
        except ImportError:
            logger.debug("parser worker: %s is not importable", module)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = max_memory_mb * MB if hard == resource.RLIM_INFINITY else min(max_memory_mb * MB, hard)
    _worker_memory_mb = max_memory_mb
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        _worker_limit = limit
    except (OSError, ValueError) as exc:  # a sandbox may deny it (systemd's SystemCallFilter=~@resources)
        logger.warning("parser worker: no memory limit, CITADEL_PARSE_MAX_MEMORY_MB is not enforced: setrlimit: %s", exc)


def parse_in_worker(parser: Parser | None, suffix: str, data: bytes) -> ParsedFile | ParseFailure:
    """Run ``parser`` (by default the formats' ``parse_bytes``) on one file, every failure of it a
    ParseFailure: classified here, where the exception's causes and the worker's peak are at hand."""
    global _worker_spent
    if _worker_spent:
        os._exit(REPLACE_EXIT)  # the last file left this worker near its limit: a fresh one takes this file
    peak_before = address_space_peak()
    try:
        if parser is None:
            from citadel.documents.formats import parse_bytes

            parser = parse_bytes
        parsed = parser(suffix, data)
        pickle.dumps(parsed, protocol=pickle.HIGHEST_PROTOCOL)  # it must also fit to be sent back
        return parsed
    except BaseException as exc:  # noqa: BLE001 - whatever a parser raises is this file's failure
        return failure_of(exc, peak_before)
    finally:
        _worker_spent = bool(_worker_limit) and address_space_peak() >= NEAR_LIMIT * _worker_limit


def failure_of(exc: BaseException, peak_before: int = 0) -> ParseFailure:
    """The failure an exception raised by a parser stands for. Memory comes first: a MemoryError
    anywhere in its causes, or any failure after the file took the worker near its limit (libxml2,
    under lxml, reports a failed allocation as a syntax error)."""
    if caused_by_memory(exc):
        return ParseFailure(memory_reason(_worker_memory_mb), "memory")
    if isinstance(exc, ParseError):
        failure = ParseFailure(one_line(exc, 1000) or "could not parse: ParseError", "unreadable")
    else:
        failure = ParseFailure(f"could not parse: {type(exc).__name__}: {one_line(exc)}".rstrip(": "), "error")
    peak = address_space_peak()
    if _worker_limit and peak > peak_before and peak >= NEAR_LIMIT * _worker_limit:
        return ParseFailure(f"{memory_reason(_worker_memory_mb)}; the parser then said: {failure.reason}", "memory")
    return failure


def address_space_peak() -> int:
    """This process's peak address space in bytes (VmPeak), 0 where /proc does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmPeak:")), 0)
    except (OSError, ValueError):
        return 0


def caused_by_memory(exc: BaseException) -> bool:
    """Whether a MemoryError is ``exc`` or among its causes (a parser may wrap it in its own error)."""
    chain = [exc]
    while len(chain) < 100 and (cause := chain[-1].__cause__ or chain[-1].__context__) is not None:
        chain.append(cause)
    return any(isinstance(error, MemoryError) for error in chain)


@dataclass
class _Entry:
    """One file in flight: its job (kept to try it once more if its worker is lost) and its future."""

    job: ParseJob
    future: Future[ParsedFile | ParseFailure]
    generation: int
    retried: bool = False


class ParserPool:
    """Worker processes that parse files, ``workers`` at a time, each file under ``timeout_s`` and
    each worker under ``max_memory_mb`` of address space. Workers start on first use and are
    replaced after ``max_tasks`` files, a timeout or a crash."""

    def __init__(
        self, workers: int, timeout_s: float, max_memory_mb: int, *,
        parser: Parser | None = None, max_tasks: int = MAX_TASKS, preload: tuple[str, ...] = PRELOAD,
    ) -> None:
        check_limits(workers, timeout_s, max_memory_mb)
        self.workers = workers
        self.timeout_s = timeout_s
        self.max_memory_mb = max_memory_mb
        self.limits = (workers, timeout_s, max_memory_mb)
        self.window = 2 * workers  # files whose bytes are in flight at once, at most
        self._parser = parser
        self._max_tasks = max_tasks
        self._preload = preload
        self._lock = threading.Lock()
        self._generation = 0
        self._last_progress = time.monotonic()
        self._closed = False
        self._pool = self._new_pool()

    def __enter__(self) -> ParserPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (a file being parsed is abandoned); the pool takes no more files."""
        with self._lock:
            if not self._closed:
                self._closed = True
                _stop(self._pool)

    def parse(self, suffix: str, data: bytes, name: str = "") -> ParsedFile | ParseFailure:
        """One file parsed in a worker: what its parser made of it, or why it could not."""
        return next(self.iter_parse([(suffix, data, name)]))

    def parse_many(self, jobs: Iterable[ParseJob]) -> list[ParsedFile | ParseFailure]:
        """Files parsed in parallel across the workers, results in the order of ``jobs``."""
        return list(self.iter_parse(jobs))

    async def aparse_many(self, jobs: Iterable[ParseJob]) -> list[ParsedFile | ParseFailure]:
        """:meth:`parse_many` without blocking the event loop (``jobs`` is read in a thread)."""
        return await asyncio.to_thread(self.parse_many, jobs)

    def iter_parse(self, jobs: Iterable[ParseJob]) -> Iterator[ParsedFile | ParseFailure]:
        """Each job's result in order, with at most ``window`` files in flight: ``jobs`` is read only
        as workers free up, so a generator that reads each file when asked bounds the bytes held."""
        source = iter(jobs)
        pending: dict[int, _Entry] = {}
        results: dict[int, ParsedFile | ParseFailure] = {}
        submitted = yielded = 0
        try:
            while True:
                while len(pending) < self.window and (job := next(source, None)) is not None:
                    pending[submitted] = self._submit(job)
                    submitted += 1
                while yielded in results:
                    yield results.pop(yielded)
                    yielded += 1
                if not pending:
                    return
                self._collect(pending, results)
        finally:
            for entry in pending.values():
                entry.future.cancel()

    def _collect(self, pending: dict[int, _Entry], results: dict[int, ParsedFile | ParseFailure]) -> None:
        """Wait a moment for a file to finish, and settle every one that did; a file whose pool was
        replaced, or a pool silent for longer than any file may take, is tried again."""
        wait([entry.future for entry in pending.values()], timeout=1.0, return_when=FIRST_COMPLETED)
        if time.monotonic() - self._last_progress > self.timeout_s + STALL_MARGIN_S:
            logger.warning("the parser workers stopped answering; starting new ones")
            self._restart(self._generation)
        for index, entry in list(pending.items()):
            if entry.future.done():
                outcome = self._settle(entry)
            elif entry.generation != self._generation or self._closed:
                outcome = self._retry(entry)
            else:
                continue
            if outcome is not None:
                del pending[index]
                results[index] = outcome

    def _settle(self, entry: _Entry) -> ParsedFile | ParseFailure | None:
        """A finished file's result, or None when it was sent again after its worker pool broke."""
        try:
            return entry.future.result()
        except TimeoutError:
            failure = ParseFailure(timeout_reason(self.timeout_s), "timeout")
        except pebble.ProcessExpired as exc:
            if exc.exitcode == REPLACE_EXIT:
                return self._retry(entry, counted=False)
            failure = ParseFailure(crash_reason(exc.exitcode), "crashed")
        except BrokenProcessPool:
            logger.warning("the parser workers died outside a file; starting new ones (a script that indexes must keep "
                           "its code under `if __name__ == '__main__':`, as each worker imports it)")
            self._restart(entry.generation)
            return self._retry(entry)
        except Exception as exc:  # noqa: BLE001 - e.g. a result that could not be sent back: this file's failure
            failure = ParseFailure(f"could not parse: {type(exc).__name__}: {one_line(exc)}", "error")
        logger.info("parsing %s: %s", entry.job[2] or "a file", failure.reason)
        return failure

    def _retry(self, entry: _Entry, counted: bool = True) -> ParsedFile | ParseFailure | None:
        """Send a file whose worker was lost once more; a second loss is the file's failure."""
        if self._closed:
            return ParseFailure("not parsed: the parser pool was closed first", "error")
        if counted and entry.retried:
            return ParseFailure("the parser's worker was lost on this file twice (it crashed or stopped answering)", "crashed")
        fresh = self._submit(entry.job)
        entry.future, entry.generation, entry.retried = fresh.future, fresh.generation, entry.retried or counted
        return None

    def _submit(self, job: ParseJob) -> _Entry:
        suffix, data, _ = job
        with self._lock:
            if self._closed:
                raise RuntimeError("the parser pool is closed")
            try:
                future = self._pool.schedule(parse_in_worker, args=(self._parser, suffix, data), timeout=self.timeout_s)
            except RuntimeError:  # the pool broke since its last file
                self._restart_locked()
                future = self._pool.schedule(parse_in_worker, args=(self._parser, suffix, data), timeout=self.timeout_s)
            self._last_progress = time.monotonic()  # the stall clock starts at the first file in flight
            future.add_done_callback(lambda _: setattr(self, "_last_progress", time.monotonic()))
            return _Entry(job, future, self._generation)

    def _restart(self, generation: int) -> None:
        """Replace the workers, once per broken pool however many files noticed it."""
        with self._lock:
            if generation == self._generation and not self._closed:
                self._restart_locked()

    def _restart_locked(self) -> None:
        _stop(self._pool)
        self._pool = self._new_pool()
        self._generation += 1
        self._last_progress = time.monotonic()

    def _new_pool(self) -> pebble.ProcessPool:
        # spawn: a worker forked from the run would inherit its threads' locks and its address space.
        return pebble.ProcessPool(
            max_workers=self.workers, max_tasks=self._max_tasks, initializer=start_worker,
            initargs=(self.max_memory_mb, self._preload), context=multiprocessing.get_context("spawn"),
        )


def check_limits(workers: int, timeout_s: float, max_memory_mb: int) -> None:
    """Refuse limits a parser pool cannot work under, naming the variable to fix."""
    if workers < 1:
        raise ConfigurationError(f"CITADEL_PARSE_WORKERS is {workers}; at least one process must parse files")
    if not timeout_s > 0:
        raise ConfigurationError(f"CITADEL_PARSE_TIMEOUT_S is {timeout_s:g}; it must be more than 0 seconds")
    if max_memory_mb < PARSE_MEMORY_FLOOR_MB:
        raise ConfigurationError(
            f"CITADEL_PARSE_MAX_MEMORY_MB is {max_memory_mb}; a parser process needs at least {PARSE_MEMORY_FLOOR_MB} MB "
            "(the interpreter and the parser libraries take about 250 MB before reading a file)"
        )


def _stop(pool: pebble.ProcessPool) -> None:
    """Stop a pool's workers at once, whatever they are doing."""
    pool.stop()  # type: ignore[no-untyped-call]
    try:
        pool.join(timeout=10)
    except (RuntimeError, TimeoutError) as exc:
        logger.warning("parser workers did not stop cleanly: %s", exc)


_shared: ParserPool | None = None
_shared_lock = threading.Lock()


def shared_pool(settings: Settings | None = None) -> ParserPool:
    """This process's parser pool, made on first use and kept across groups (a worker takes about a
    second to start); made anew when the settings' limits change, or in a forked child."""
    global _shared
    if settings is None:
        from citadel.settings import get_settings

        settings = get_settings()
    limits = (settings.parse_workers, settings.parse_timeout_s, settings.parse_max_memory_mb)
    with _shared_lock:
        if _shared is not None and _shared.limits != limits:
            _shared.close()
            _shared = None
        if _shared is None:
            _shared = ParserPool(*limits)
        return _shared


@atexit.register
def close_shared_pool() -> None:
    """Stop the shared pool's workers (at interpreter exit, and for tests)."""
    global _shared
    with _shared_lock:
        pool, _shared = _shared, None
    if pool is not None:
        pool.close()


def _forget_shared_pool() -> None:
    """In a forked child: the parent's pool and workers are not its own. It forgets them as
    multiprocessing does for a child it starts, or its exit would stop the parent's workers."""
    global _shared, _shared_lock
    _shared = None
    _shared_lock = threading.Lock()  # it may have been held by another thread at the fork
    children = getattr(multiprocessing.process, "_children", None)
    if isinstance(children, set):
        children.clear()


os.register_at_fork(after_in_child=_forget_shared_pool)
