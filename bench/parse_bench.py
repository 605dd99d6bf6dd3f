"""Benchmark: how fast the rich-format parsers turn files into chunks, against the embedding rate
they must outrun (one embedding server embeds about 840 texts/s; parsing should give three times
that). Generates a corpus per format with each format's own writer in a temporary directory, then
parses every file with ``parse_bytes`` and chunks each section (1000 characters, 100 overlap), in
one process and in ``--workers`` processes. Usage:

    .venv/bin/python -m bench.parse_bench
    .venv/bin/python -m bench.parse_bench --scale 0.25 --workers 2 --json

Reports per format: files/s, pages/s (PDF pages, slides, sheets, EPUB chapters), chunks/s, MB/s of
input, chunks per CPU-second of the parsing processes (what a core gives on a quiet machine), and
each mode's peak RSS (of its largest process), with the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

EMBED_RATE = 840  # texts/s of one embedding server (bench/phases_bench.py's default)
COUNTS = {".pdf": 200, ".docx": 200, ".html": 200, ".pptx": 100, ".xlsx": 100, ".epub": 50}


def outline(rng: random.Random, headings: int, paragraphs: int) -> list[tuple[int | None, str]]:
    from citadel.testing.corpus import paragraph

    parts: list[tuple[int | None, str]] = []
    for number in range(headings):
        parts.append((1 if number % 3 == 0 else 2, f"Part {number} {paragraph(rng, 4).rstrip('.')}"))
        parts.extend((None, paragraph(rng, 70)) for _ in range(paragraphs))
    return parts


def build(suffix: str, rng: random.Random) -> bytes:
    """One document of the format, of a typical size for it."""
    from citadel.testing import richfiles
    from citadel.testing.corpus import paragraph

    if suffix == ".pdf":
        return richfiles.pdf_bytes([f"{paragraph(rng, 70)}\n\n{paragraph(rng, 70)}" for _ in range(10)], title="A report")
    if suffix == ".docx":
        return richfiles.docx_bytes([(0, "A handbook"), *outline(rng, 8, 3)], table=[["key", "value"], ["size", "10"]])
    if suffix == ".html":
        return richfiles.html_page(outline(rng, 5, 3), title="A page").encode()
    if suffix == ".pptx":
        return richfiles.pptx_bytes([(paragraph(rng, 4), [paragraph(rng, 12) for _ in range(4)]) for _ in range(10)])
    if suffix == ".xlsx":
        rows = [[rng.randint(1, 10_000), paragraph(rng, 3), paragraph(rng, 6), round(rng.random() * 100, 2)] for _ in range(200)]
        return richfiles.xlsx_bytes({"Data": rows, "Summary": rows[:20]})
    return richfiles.epub_bytes([outline(rng, 2, 3) for _ in range(10)], title="A book")


def generate(root: str, counts: dict[str, int]) -> dict[str, list[str]]:
    """The corpus written under ``root``: file paths per suffix."""
    rng = random.Random(11)
    paths: dict[str, list[str]] = {}
    for suffix, count in counts.items():
        paths[suffix] = []
        for number in range(count):
            path = Path(root) / f"doc{number:04d}{suffix}"
            path.write_bytes(build(suffix, rng))
            paths[suffix].append(str(path))
    return paths


def parse_file(path: str) -> tuple[int, int, int, int, float]:
    """(bytes, pages, chunks, this process's peak RSS in KiB, CPU seconds) of one file parsed and
    chunked; the CPU time says what a core would do on a quiet machine."""
    from citadel.documents import chunk_text
    from citadel.documents.formats import parse_bytes

    cpu = time.process_time()
    data = Path(path).read_bytes()
    parsed = parse_bytes(Path(path).suffix, data)
    chunks = sum(len(chunk_text(section.text, 1000, 100)) for section in parsed.sections)
    cpu = time.process_time() - cpu
    return len(data), parsed.pages or 0, chunks, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, cpu


def warm_up(_: int) -> int:
    """Load every parser's libraries, so the timings exclude imports (paid once per process)."""
    import docx
    import openpyxl
    import pptx

    import citadel.documents.formats.epub
    import citadel.documents.formats.office
    import citadel.documents.formats.pdf  # noqa: F401
    from citadel.documents import chunk_text

    del docx, openpyxl, pptx
    return len(chunk_text("warm", 1000, 100))


Results = list[tuple[int, int, int, int, float]]


def measure(paths: dict[str, list[str]], run: Callable[[list[str]], Results]) -> tuple[dict[str, dict[str, float]], int]:
    """Each format's rates through ``run`` (a map of parse_file), and the peak RSS in MiB."""
    rows: dict[str, dict[str, float]] = {}
    peak = 0
    for suffix, files in paths.items():
        start = time.perf_counter()
        results = run(files)
        seconds = time.perf_counter() - start
        size, pages, chunks = (sum(result[i] for result in results) for i in range(3))
        peak = max([peak, *(result[3] for result in results)])
        cpu = sum(result[4] for result in results)
        rows[suffix] = {"pages_per_s": round(pages / seconds, 1)} if pages else {}
        rows[suffix] |= {
            "files": len(files), "seconds": round(seconds, 3), "files_per_s": round(len(files) / seconds, 1),
            "chunks": chunks, "chunks_per_s": round(chunks / seconds, 1),
            "mb_per_s": round(size / seconds / 1e6, 2), "chunks_per_cpu_s": round(chunks / cpu, 1),
        }
    total_seconds = sum(row["seconds"] for row in rows.values())
    rows["all"] = {
        "files": sum(row["files"] for row in rows.values()), "seconds": round(total_seconds, 3),
        "chunks": sum(row["chunks"] for row in rows.values()),
    }
    rows["all"]["files_per_s"] = round(rows["all"]["files"] / total_seconds, 1)
    rows["all"]["chunks_per_s"] = round(rows["all"]["chunks"] / total_seconds, 1)
    return rows, peak // 1024


def run_modes(paths: dict[str, list[str]], workers: int) -> dict[str, Any]:
    """The corpus parsed by one process, then by ``workers`` processes (fresh, spawned, warmed)."""
    context = multiprocessing.get_context("spawn")
    report: dict[str, Any] = {}
    for processes in sorted({1, workers}):
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            list(pool.map(warm_up, range(processes * 4)))

            def run(files: list[str], pool: ProcessPoolExecutor = pool, n: int = processes) -> Results:
                return list(pool.map(parse_file, files, chunksize=max(1, len(files) // (n * 8))))

            rows, peak = measure(paths, run)
        report[f"{processes}_process"] = {"formats": rows, "peak_rss_mib": peak}
    return report


COLUMNS = (("format", 7), ("files", 6), ("seconds", 8), ("files_per_s", 12), ("pages_per_s", 12), ("chunks", 7),
           ("chunks_per_s", 13), ("mb_per_s", 9), ("chunks_per_cpu_s", 17))


def print_table(report: dict[str, Any]) -> None:
    for mode, result in report.items():
        if not mode.endswith("_process"):
            continue
        print(f"\n{mode.replace('_', ' ')}(es), peak RSS {result['peak_rss_mib']} MiB (largest process)")
        print(" ".join(f"{name:>{width}}" for name, width in COLUMNS))
        for suffix, row in result["formats"].items():
            print(" ".join(f"{row.get(name, suffix if name == 'format' else ''):>{width}}" for name, width in COLUMNS))
    print(f"\ntarget: {3 * EMBED_RATE} chunks/s (three times one embedding server's {EMBED_RATE} texts/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every format's file count")
    parser.add_argument("--workers", type=int, default=2, help="processes for the parallel run")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    counts = {suffix: max(1, round(count * args.scale)) for suffix, count in COUNTS.items()}
    with tempfile.TemporaryDirectory(prefix="parse-bench-") as root:
        start = time.perf_counter()
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            paths = pool.submit(generate, root, counts).result()
        report: dict[str, Any] = {"generated_s": round(time.perf_counter() - start, 1), "target_chunks_per_s": 3 * EMBED_RATE}
        report["load_average_before"] = os.getloadavg()[0]
        report.update(run_modes(paths, args.workers))
        report["load_average_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"corpus generated in {report['generated_s']} s")
        print(f"load average {report['load_average_before']:.1f} before, {report['load_average_after']:.1f} after")
        print_table(report)


if __name__ == "__main__":
    main()
