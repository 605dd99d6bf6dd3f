"""Parsers isolated in worker processes: a parser that loops, eats memory, crashes or raises costs
one file its place (a failure with its reason) while the rest of the batch parses, in parallel, in
order, with a bounded number of files in flight; the run's own memory does not grow. Real hostile
files (a zip bomb, a huge sheet, a DOM that outgrows the limit, a PDF bomb, encrypted and truncated
PDFs) go through the real parsers the same way."""

from __future__ import annotations

import asyncio
import atexit
import io
import os
import resource
import signal
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from citadel.documents import isolation
from citadel.documents.isolation import ParseFailure, ParseJob, ParserPool, close_shared_pool, shared_pool
from citadel.documents.parsed import ParsedFile, ParseError, Section
from citadel.errors import ConfigurationError
from citadel.settings import Settings

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

TIMEOUT_S = 2.0
MEMORY_MB = 512
GB = 1 << 30


def hostile(suffix: str, data: bytes) -> ParsedFile:
    """A parser that does what the suffix says; ``.echo`` (and anything else) returns the bytes as text."""
    if suffix == ".loop":
        while True:
            pass
    if suffix == ".deaf":  # ignores the polite SIGTERM: only SIGKILL ends it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            pass
    if suffix == ".hog":
        bytearray(4 * GB)
    if suffix == ".creep":
        hoard = []
        while True:
            hoard.append(bytes(16 << 20))
    if suffix == ".wrapped":
        try:
            bytearray(4 * GB)
        except MemoryError as exc:
            raise ParseError("not a readable file: it is corrupt") from exc
    if suffix in (".segv", ".kill"):
        os.kill(os.getpid(), signal.SIGSEGV if suffix == ".segv" else signal.SIGKILL)
    if suffix == ".exit":
        os._exit(3)
    if suffix == ".bad":
        raise ParseError("the PDF is encrypted; decrypt it and index it again")
    if suffix == ".boom":
        raise ValueError("no such\n   part")
    if suffix == ".near":  # takes the worker past three quarters of its limit, then succeeds
        bytearray(400 << 20)
        suffix = ".pid"
    if suffix == ".pid":
        return ParsedFile("txt", [Section(str(os.getpid()))])
    if suffix == ".sleep":
        start = time.time()
        time.sleep(float(data))
        return ParsedFile("txt", [Section(f"{start} {time.time()}")])
    return ParsedFile("txt", [Section(data.decode())])


@pytest.fixture(scope="module")
def pool() -> Iterator[ParserPool]:
    with ParserPool(2, TIMEOUT_S, MEMORY_MB, parser=hostile, preload=()) as parsers:
        yield parsers


def texts(results: list[ParsedFile | ParseFailure]) -> list[str]:
    return [result.text if isinstance(result, ParsedFile) else f"{result.kind}: {result.reason}" for result in results]


def test_a_parser_that_never_returns_is_killed_at_the_time_limit_and_the_pool_goes_on(pool: ParserPool) -> None:
    results = pool.parse_many([(".loop", b"", "loop"), (".echo", b"after", "after")])
    assert texts(results) == [
        "timeout: took longer than 2 s to parse (CITADEL_PARSE_TIMEOUT_S); a genuine file this slow needs a larger limit, "
        "a hostile one stays here",
        "after",
    ]
    assert pool.parse(".echo", b"next", "next") == ParsedFile("txt", [Section("next")])


def test_a_parser_deaf_to_sigterm_is_killed_all_the_same(pool: ParserPool) -> None:
    failure = pool.parse(".deaf", b"", "deaf")
    assert isinstance(failure, ParseFailure) and failure.kind == "timeout"
    assert texts(pool.parse_many([(".echo", b"fine", "fine")])) == ["fine"]


@pytest.mark.parametrize("suffix", [".hog", ".creep", ".wrapped"])
def test_a_parser_that_wants_more_memory_than_the_limit_fails_for_memory_not_the_machine(pool: ParserPool, suffix: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = pool.parse_many([(suffix, b"", "hog"), (".echo", b"fine", "fine")])
    assert texts(results) == ["memory: needed more than 512 MB of memory to parse (CITADEL_PARSE_MAX_MEMORY_MB)", "fine"]
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 100 * 1024  # the worker's gigabytes were never this process's


@pytest.mark.parametrize(("suffix", "how"), [(".segv", "signal 11, SIGSEGV"), (".kill", "signal 9, SIGKILL"), (".exit", "exit code 3")])
def test_a_parser_that_kills_its_worker_fails_that_file_alone(pool: ParserPool, suffix: str, how: str) -> None:
    results = pool.parse_many([(".echo", b"before", "before"), (suffix, b"", "crash"), (".echo", b"after", "after")])
    assert texts(results) == ["before", f"crashed: the parser crashed ({how}) on this file", "after"]
    assert pool.parse(".echo", b"next", "next") == ParsedFile("txt", [Section("next")])


def test_a_parse_error_keeps_its_message_and_any_other_exception_is_one_line(pool: ParserPool) -> None:
    results = pool.parse_many([(".bad", b"", "bad"), (".boom", b"", "boom")])
    assert texts(results) == [
        "unreadable: the PDF is encrypted; decrypt it and index it again",
        "error: could not parse: ValueError: no such part",
    ]


def test_files_parse_in_parallel_and_come_back_in_order(pool: ParserPool) -> None:
    results = pool.parse_many([(".sleep", b"1", "a"), (".sleep", b"1", "b")])
    (start_a, end_a), (start_b, end_b) = (map(float, result.text.split()) for result in results if isinstance(result, ParsedFile))
    assert start_a < end_b and start_b < end_a  # both ran at once, on two workers
    jobs = [(".bad" if number % 5 == 3 else ".echo", str(number).encode(), str(number)) for number in range(24)]
    got = texts(pool.parse_many(jobs))
    assert got == [
        "unreadable: the PDF is encrypted; decrypt it and index it again" if number % 5 == 3 else str(number) for number in range(24)
    ]


def test_no_more_than_twice_the_workers_files_are_in_flight(pool: ParserPool) -> None:
    pulled: list[float] = []

    def jobs() -> Iterator[ParseJob]:
        for number in range(10):
            pulled.append(time.time())  # when the file would be read
            yield ".sleep", b"0.2", str(number)

    results = pool.parse_many(jobs())
    ends = sorted(float(result.text.split()[1]) for result in results if isinstance(result, ParsedFile))
    assert len(ends) == 10 and pool.window == 4
    # The k-th file is read only once k - 4 + 1 files are done: never more than 4 files' bytes held.
    assert all(pulled[k] >= ends[k - pool.window] for k in range(pool.window, 10))


def test_parsing_from_async_code_leaves_the_event_loop_free(pool: ParserPool) -> None:
    async def main() -> tuple[list[ParsedFile | ParseFailure], int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        ticker = asyncio.create_task(tick())
        results = await pool.aparse_many([(".sleep", b"0.5", "a"), (".echo", b"b", "b")])
        ticker.cancel()
        return results, ticks

    results, ticks = asyncio.run(main())
    assert isinstance(results[0], ParsedFile) and texts(results[1:]) == ["b"]
    assert ticks >= 3


def test_limits_a_pool_cannot_work_under_are_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="CITADEL_PARSE_MAX_MEMORY_MB is 256; a parser process needs at least 512 MB"):
        ParserPool(1, 1.0, 256)
    with pytest.raises(ConfigurationError, match="CITADEL_PARSE_WORKERS is 0"):
        ParserPool(0, 1.0, 1024)
    with pytest.raises(ConfigurationError, match="CITADEL_PARSE_TIMEOUT_S is 0"):
        ParserPool(1, 0.0, 1024)
    with pytest.raises(ValidationError, match="parse_max_memory_mb"):
        Settings(parse_max_memory_mb=100)
    settings = Settings()
    assert (settings.parse_timeout_s, settings.parse_max_memory_mb) == (30.0, 1024)
    assert settings.parse_workers == min(2, os.cpu_count() or 1)


def test_the_shared_pool_is_kept_across_groups_remade_for_new_limits_and_never_shared_with_a_fork() -> None:
    settings = Settings(parse_workers=1, parse_timeout_s=5)
    try:
        first = shared_pool(settings)
        assert shared_pool(settings) is first
        other = shared_pool(Settings(parse_workers=1, parse_timeout_s=6))
        assert other is not first and other.limits == (1, 6.0, 1024)
        pid = os.fork()
        if pid == 0:  # the child gets a pool of its own, never its parent's
            os._exit(0 if shared_pool(Settings(parse_workers=1, parse_timeout_s=6)) is not other else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert shared_pool(Settings(parse_workers=1, parse_timeout_s=6)) is other
    finally:
        close_shared_pool()


def test_a_worker_the_sandbox_denies_a_memory_limit_still_parses(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def denied(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(resource, "setrlimit", denied)
    monkeypatch.setattr(isolation, "_worker_limit", 0)
    monkeypatch.setattr(isolation, "_worker_memory_mb", 0)
    for name in isolation.ONE_THREAD:
        monkeypatch.setenv(name, "1")
    isolation.start_worker(MEMORY_MB, ())  # in this process: setrlimit is denied, so nothing is limited
    assert "no memory limit, CITADEL_PARSE_MAX_MEMORY_MB is not enforced" in caplog.text
    assert isolation.parse_in_worker(hostile, ".echo", b"text") == ParsedFile("txt", [Section("text")])
    assert not isolation._worker_spent


def test_a_worker_a_file_took_near_its_limit_is_replaced_before_the_next_file() -> None:
    with ParserPool(1, 10.0, MEMORY_MB, parser=hostile, preload=()) as parsers:
        near, after = texts(parsers.parse_many([(".near", b"", "near"), (".pid", b"", "after")]))
        assert near.isdigit() and after.isdigit() and near != after  # the next file had a fresh worker
        assert texts([parsers.parse(".pid", b"", "again")]) == [after]  # which stays


def test_closing_a_pool_ends_the_files_in_flight_on_another_thread() -> None:
    parsers = ParserPool(1, 10.0, MEMORY_MB, parser=hostile, preload=())
    assert texts([parsers.parse(".echo", b"ready", "ready")]) == ["ready"]
    done: list[list[str]] = []
    thread = threading.Thread(target=lambda: done.append(texts(parsers.parse_many([(".sleep", b"5", "a"), (".echo", b"b", "b")]))))
    thread.start()
    time.sleep(0.5)
    parsers.close()
    thread.join(timeout=10)
    assert done == [["error: not parsed: the parser pool was closed first"] * 2]


def test_a_forked_child_that_exits_leaves_the_parents_workers_alone() -> None:
    with ParserPool(1, TIMEOUT_S, MEMORY_MB, parser=hostile, preload=()) as parsers:
        worker = parsers.parse(".pid", b"", "pid")
        pid = os.fork()
        if pid == 0:  # a normal exit runs the exit handlers (pebble's and multiprocessing's stop their children)
            atexit._run_exitfuncs()
            os._exit(0)
        os.waitpid(pid, 0)
        assert parsers.parse(".pid", b"", "pid") == worker  # the same worker, still alive


# ---- real hostile files through the real parsers ----


@pytest.fixture(scope="module")
def real_pool() -> Iterator[ParserPool]:
    with ParserPool(2, 10.0, MEMORY_MB) as parsers:
        yield parsers


def zeros_deflated(megabytes: int) -> bytes:
    """A zlib stream of ``megabytes`` MB of zeros, about a thousand times smaller, built without
    compressing them: after a full flush each megabyte compresses to the same bytes."""
    chunk = bytes(1 << 20)
    compressor = zlib.compressobj(9)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    size = megabytes << 20
    adler = ((size % 65521) << 16) | 1  # Adler-32 of zeros: A stays 1, B adds it once per byte
    return first + again * (megabytes - 1) + b"\x03\x00" + struct.pack(">I", adler)


def pdf_bomb(megabytes: int = 2048) -> bytes:
    """A 2 MB PDF whose one page's content stream inflates to ``megabytes`` MB."""
    body = zeros_deflated(megabytes)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(body), body),
    ]
    out = io.BytesIO(b"%PDF-1.4\n")
    out.seek(0, io.SEEK_END)
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, obj))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def huge_xlsx(megabytes: int = 200) -> bytes:
    """An 8 MB workbook whose one sheet is ``megabytes`` MB of XML: a one-megabyte block of rows,
    each with a few random bytes so that it compresses under the zip-bomb ratio, written again and
    again (deflate's 32 KB window never sees the repeat)."""
    from citadel.testing.richfiles import xlsx_bytes

    pad = b"a" * 400
    rows = b"".join(
        b'<row><c t="inlineStr"><is><t>%s%s</t></is></c></row>' % (os.urandom(6).hex().encode(), pad) for _ in range((1 << 20) // 460)
    )
    return with_part(xlsx_bytes({"S": [["template"]]}), "xl/worksheets/sheet1.xml", megabytes, rows,
                     b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>',
                     b"</sheetData></worksheet>")


def with_part(package: bytes, member: str, megabytes: int, block: bytes, head: bytes, tail: bytes) -> bytes:
    """``package`` (a zip) with ``member`` replaced by ``head``, ``block`` written ``megabytes`` times, and ``tail``."""
    template = zipfile.ZipFile(io.BytesIO(package))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for item in template.infolist():
            if item.filename != member:
                archive.writestr(item.filename, template.read(item))
        with archive.open(member, "w", force_zip64=True) as stream:
            stream.write(head)
            for _ in range(megabytes):
                stream.write(block)
            stream.write(tail)
    return out.getvalue()


def docx_outgrowing_memory(megabytes: int = 50) -> bytes:
    """A 1.3 MB DOCX whose ``megabytes`` MB of paragraphs pass the zip checks (about 40x) but make a
    DOM more than ten times as large."""
    from citadel.testing.richfiles import docx_bytes

    paragraph = b"<w:p><w:r><w:t>ab</w:t></w:r></w:p>"
    block = b"".join(paragraph * 9 + b"<w:p><w:r><w:t>%s</w:t></w:r></w:p>" % os.urandom(4).hex().encode() for _ in range((1 << 20) // 360))
    return with_part(docx_bytes([(None, "template")]), "word/document.xml", megabytes, block,
                     b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>',
                     b"</w:body></w:document>")


def test_real_hostile_files_fail_with_their_reasons_and_the_rest_of_the_batch_parses(real_pool: ParserPool) -> None:
    from citadel.testing.richfiles import docx_bytes, pdf_bytes, xlsx_bytes, zip_bomb

    good_pdf = pdf_bytes(["The lighthouse keeper trims the lamp.", "Page two."])
    truncated = pdf_bytes([f"page {number}" for number in range(30)])
    jobs: list[ParseJob] = [
        (".docx", zip_bomb(megabytes=64), "bomb.docx"),
        (".pdf", good_pdf, "good.pdf"),
        (".xlsx", huge_xlsx(), "huge.xlsx"),
        (".pdf", pdf_bytes(["secret"], password="pw"), "locked.pdf"),
        (".docx", docx_bytes([(1, "Findings"), (None, "Zebras prefer the northern meadow.")]), "good.docx"),
        (".pdf", truncated[: len(truncated) // 2], "truncated.pdf"),
        (".docx", docx_outgrowing_memory(), "dom.docx"),
        (".pdf", pdf_bomb(), "bomb.pdf"),
        (".xlsx", xlsx_bytes({"Costs": [["item", "euros"], ["sensors", 1200]]}), "good.xlsx"),
    ]
    results = dict(zip((name for _, _, name in jobs), real_pool.parse_many(jobs), strict=True))
    reasons = {name: result.reason for name, result in results.items() if isinstance(result, ParseFailure)}
    assert reasons["bomb.docx"].startswith("'word/document.xml' expands ") and "(a zip bomb?)" in reasons["bomb.docx"]
    # openpyxl streams the sheet: it runs out of time, or of memory for its text, whichever comes first.
    assert reasons["huge.xlsx"].startswith(("took longer than 10 s to parse (CITADEL_PARSE_TIMEOUT_S)", "needed more than 512 MB"))
    assert reasons["locked.pdf"] == "the PDF is encrypted; decrypt it (for example `qpdf --decrypt`) and index it again"
    assert reasons["truncated.pdf"].startswith("not a readable PDF: ")
    assert reasons["dom.docx"].startswith("needed more than 512 MB of memory to parse (CITADEL_PARSE_MAX_MEMORY_MB)")
    assert reasons["bomb.pdf"].startswith("the parser crashed (signal ") or reasons["bomb.pdf"].startswith("needed more than 512 MB")
    assert sorted(name for name in results if name not in reasons) == ["good.docx", "good.pdf", "good.xlsx"]
    assert "lighthouse keeper" in results["good.pdf"].text  # type: ignore[union-attr]
    assert "sensors\t1200" in results["good.xlsx"].text  # type: ignore[union-attr]
