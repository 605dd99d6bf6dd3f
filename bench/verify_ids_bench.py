"""Benchmark: every point id of an embedded collection, what `citadel verify` compares with the
registry, read from the store's rows (as it is now) and through the loaded store (as before).

Each read runs in a fresh process, which reports its time (from the store's connect to the ids)
and peak RSS. Usage:

    .venv/bin/python -m bench.verify_ids_bench --points 60000 --dimensions 768
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

READ = """
import asyncio, json, resource, sys, time
from pathlib import Path
from citadel.store import VectorStore, local_client
path, how = Path(sys.argv[1]), sys.argv[2]
start = time.perf_counter()
store = VectorStore.connect(url=None, api_key=None, path=path) if how == "rows" else VectorStore(local_client(path))
ids = asyncio.run(store.point_ids("bench"))
print(json.dumps({"seconds": time.perf_counter() - start, "ids": len(ids),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


async def fill(path: Path, points: int, dimensions: int) -> None:
    """A collection of ``points`` random vectors with payloads like an index run's."""
    from citadel.store import VectorStore, close_local_clients

    store = VectorStore.connect(url=None, api_key=None, path=path, batch_size=512)
    await store.ensure_collection("bench", dimensions, "bench-model")
    rng = np.random.default_rng(1)
    for start in range(0, points, 2048):
        count = min(2048, points - start)
        ids = [str(uuid.UUID(int=start + n + 1)) for n in range(count)]
        payloads = [{"document_id": f"doc-{(start + n) // 20}", "chunk_index": (start + n) % 20, "text": "x" * 600}
                    for n in range(count)]
        await store.upsert("bench", ids, rng.standard_normal((count, dimensions)).astype(np.float32), payloads)
    close_local_clients()


def read(path: Path, how: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", READ, str(path), how], capture_output=True, text=True, check=True)
    return {**json.loads(done.stdout), "wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=60_000)
    parser.add_argument("--dimensions", type=int, default=768)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "qdrant"
        asyncio.run(fill(path, args.points, args.dimensions))
        report = {"points": args.points, "dimensions": args.dimensions, "rows": read(path, "rows"), "loaded": read(path, "loaded")}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
