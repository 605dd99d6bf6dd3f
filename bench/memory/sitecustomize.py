"""Where a process's memory goes, over its life: started by Python itself in any process whose
PYTHONPATH holds this folder and whose environment names a report file.

    .venv/bin/python -m bench.saturation_bench --files 3000 --cost 0,0 --store server \\
        --set PYTHONPATH=bench/memory --set MEMORY_REPORT=/tmp/memory [--set MEMORY_TRACE_AFTER=30]

Each process writes ``<MEMORY_REPORT>/<command>-<pid>.json`` when it exits (``index-4242.json``).

Every 2 s it samples the resident memory, glibc's allocated and free bytes (``mallinfo2``: free
bytes kept in its heaps are fragmentation) and Python's allocated blocks. With
MEMORY_TRACE_AFTER=S it starts ``tracemalloc`` after S seconds and reports, from its last
snapshot, what was allocated since then and is still alive, by where (slow: for a probe only).
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

    def sample() -> None:
        import tracemalloc

        while True:
            time.sleep(2)
            info, at = libc.mallinfo2(), round(time.time() - began, 1)
            samples.append({"s": at, **{k: round(v) for k, v in _status_mb().items()},
                            "glibc_used_mb": info.uordblks >> 20, "glibc_free_mb": info.fordblks >> 20,
                            "glibc_mapped_mb": info.hblkhd >> 20, "python_blocks_k": sys.getallocatedblocks() // 1000})
            if trace_after and at >= trace_after:
                if not tracemalloc.is_tracing():
                    tracemalloc.start(12)
                elif int(at) % 16 < 2:
                    kept["snapshot"], kept["at"] = tracemalloc.take_snapshot(), at

    def report() -> None:
        result: dict[str, object] = {"argv": sys.argv, "samples": samples}
        if "snapshot" in kept:
            stats = kept["snapshot"].statistics("traceback")
            result["alive_since_tracing"] = {
                "at_s": kept["at"], "total_mb": round(sum(s.size for s in stats) / 2**20, 1),
                "largest": [{"mb": round(s.size / 2**20, 2), "blocks": s.count, "where": s.traceback.format()[-8:]}
                            for s in stats[:15]]}
        command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "python")
        os.makedirs(report_path, exist_ok=True)
        with open(os.path.join(report_path, f"{os.path.basename(command)}-{os.getpid()}.json"), "w") as out:
            json.dump(result, out, indent=1)

    threading.Thread(target=sample, name="memory-report", daemon=True).start()
    atexit.register(report)


if REPORT and sys.platform.startswith("linux"):
    _start(REPORT)
