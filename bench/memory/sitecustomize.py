"""Where a process's memory goes, over its life: started by Python itself in any process whose
PYTHONPATH holds this folder and whose environment names a report file.

    .venv/bin/python -m bench.saturation_bench --files 3000 --cost 0,0 --store server \\
        --set PYTHONPATH=bench/memory --set MEMORY_REPORT=/tmp/memory [--set MEMORY_TRACE_AFTER=30]

Each process writes ``<MEMORY_REPORT>/<command>-<pid>.json`` when it exits (``index-4242.json``).

Every 2 s it samples the resident memory, glibc's allocated and free bytes (``mallinfo2``: free
bytes kept in its heaps are fragmentation) and Python's allocated blocks. With
MEMORY_TRACE_AFTER=S it starts ``tracemalloc`` after S seconds and reports, from its last
snapshot, what was allocated since then and is still alive, by where (slow: for a probe only).
With MEMORY_CENSUS_EVERY=S it counts the gc's objects by type every S seconds and reports the
types that grew most from the first count to the last, and to the count nearest the peak of
resident memory (a fraction of a second a count: cheap enough for a whole run). With
MEMORY_COLLECT_EVERY=S it runs the gc's full collection every S seconds (a probe: what memory
garbage in reference cycles holds between the gc's own rare full collections).
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import sys
import threading
import time
from typing import Any

REPORT = os.environ.get("MEMORY_REPORT")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _status_mb() -> dict[str, float]:
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def _start(report_path: str) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    began, samples = time.time(), []
    kept: dict[str, Any] = {}  # the last snapshot and its time
    trace_after = float(os.environ.get("MEMORY_TRACE_AFTER", "0") or 0)
    census_every = int(os.environ.get("MEMORY_CENSUS_EVERY", "0") or 0)
    collect_every = int(os.environ.get("MEMORY_COLLECT_EVERY", "0") or 0)

    def sample() -> None:
        import gc
        import tracemalloc
        from collections import Counter

        while True:
            time.sleep(2)
            info, at = libc.mallinfo2(), round(time.time() - began, 1)
            samples.append({"s": at, **{k: round(v) for k, v in _status_mb().items()},
                            "glibc_used_mb": info.uordblks >> 20, "glibc_free_mb": info.fordblks >> 20,
                            "glibc_mapped_mb": info.hblkhd >> 20, "python_blocks_k": sys.getallocatedblocks() // 1000})
            if collect_every and int(at) % collect_every < 2:
                gc.collect()  # a probe: is what the census counts garbage in reference cycles?
            if census_every and int(at) % census_every < 2:
                counted = Counter(type(obj).__qualname__ for obj in gc.get_objects())
                kept.setdefault("census_first", (at, counted))
                kept["census_last"] = (at, counted)
                if samples[-1]["VmRSS"] >= kept.get("census_peak", (0, None, 0))[2]:  # the count nearest the peak
                    kept["census_peak"] = (at, counted, samples[-1]["VmRSS"])
            if trace_after and at >= trace_after:
                if not tracemalloc.is_tracing():
                    tracemalloc.start(12)
                elif int(at) % 16 < 2:
                    kept["snapshot"], kept["at"] = tracemalloc.take_snapshot(), at
                    kept.setdefault("first", kept["snapshot"])
                    kept.setdefault("first_at", at)

    def report() -> None:
        result: dict[str, object] = {"argv": sys.argv, "samples": samples}
        if "snapshot" in kept:
            stats = kept["snapshot"].statistics("traceback")
            result["alive_since_tracing"] = {
                "at_s": kept["at"], "total_mb": round(sum(s.size for s in stats) / 2**20, 1),
                "largest": [{"mb": round(s.size / 2**20, 2), "blocks": s.count, "where": s.traceback.format()[-8:]}
                            for s in stats[:15]]}
            grown = kept["snapshot"].compare_to(kept["first"], "traceback")
            grown.sort(key=lambda s: -s.count_diff)
            result["grown_by_count"] = {
                "from_s": kept["first_at"], "to_s": kept["at"],
                "largest": [{"blocks": s.count_diff, "mb": round(s.size_diff / 2**20, 2), "where": s.traceback.format()[-12:]}
                            for s in grown[:20]]}
        if "census_first" in kept:
            first_at, first = kept["census_first"]
            for label, (at, counted, *_) in (("objects_grown", kept["census_last"]), ("objects_at_peak", kept["census_peak"])):
                grown = sorted(((counted[name] - first.get(name, 0), name) for name in counted), reverse=True)
                result[label] = {"from_s": first_at, "to_s": at,
                                 "largest": [{"type": name, "more": more, "now": counted[name]} for more, name in grown[:25]]}
        command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "python")
        os.makedirs(report_path, exist_ok=True)
        with open(os.path.join(report_path, f"{os.path.basename(command)}-{os.getpid()}.json"), "w") as out:
            json.dump(result, out, indent=1)

    threading.Thread(target=sample, name="memory-report", daemon=True).start()
    atexit.register(report)


if REPORT and sys.platform.startswith("linux"):
    _start(REPORT)
