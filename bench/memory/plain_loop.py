"""The plain loop's peak memory (``index_source``: no Prefect, no overlap) for corpora of several
sizes, each in a process of its own, against the Ollama-protocol test server with no delay and the
Qdrant REST test server; with ``--trace`` also what Python allocated between two snapshots 20 s
apart that is still alive at the end. Usage:

    .venv/bin/python -m bench.memory.plain_loop --files 3000,12000 [--trace]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.phases_bench import REPO
from bench.saturation_bench import start_embedders

CHILD = """
import asyncio, resource, sys, threading, time, tracemalloc
from citadel.testing.corpus import index_with_own_backends
snapshots = []
def trace():
    time.sleep(15); tracemalloc.start(3); time.sleep(20); snapshots.append(tracemalloc.take_snapshot())
if sys.argv[3] == "trace":
    threading.Thread(target=trace, daemon=True).start()
began = time.time()
summary = asyncio.run(index_with_own_backends(sys.argv[1], sys.argv[2]))
if snapshots:
    for stat in tracemalloc.take_snapshot().compare_to(snapshots[0], "traceback")[:10]:
        print(f"  {stat.size_diff / 2**20:+.2f} MB {stat.count_diff:+d} blocks", " | ".join(stat.traceback.format()[-6::2]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(f"{summary.chunks_written} chunks in {time.time() - began:.1f} s, peak RSS {peak} MB")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="3000,12000")
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    from citadel.testing.corpus import write_corpus
    from citadel.testing.qdrant_process import start_qdrant_process, stop_qdrant_process

    with tempfile.TemporaryDirectory(prefix="citadel-plain-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        server, qdrant_url = start_qdrant_process(root / "qdrant", timeout=120)
        stack.callback(stop_qdrant_process, server)
        ((url, _),) = start_embedders(1, "0,0", stack)
        for files in (int(part) for part in args.files.split(",")):
            corpus = root / f"corpus-{files}"
            write_corpus(corpus, files=files, paragraphs=23, seed=2026)
            env = {**os.environ, "CITADEL_DATA_DIR": str(root / f"data-{files}"), "CITADEL_EMBEDDER": "ollama",
                   "CITADEL_OLLAMA_URLS": url, "CITADEL_EMBEDDING_MODEL": "nomic-embed-text", "CITADEL_QDRANT_URL": qdrant_url}
            done = subprocess.run([sys.executable, "-c", CHILD, str(corpus), f"plain{files}", "trace" if args.trace else "-"],
                                  cwd=REPO, env=env, capture_output=True, text=True)
            print(f"{files} documents: {done.stdout.strip()}", done.stderr[-2000:] if done.returncode else "", flush=True)


if __name__ == "__main__":
    main()
