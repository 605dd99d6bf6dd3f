"""Benchmark: an ``s3://`` source of many small objects on a local S3 server (moto's server mode
on loopback), indexed the first time and then again unchanged, as ``citadel index`` runs them
without an orchestrator (the plain loop; the unchanged run is the answer a CLI gives without
Prefect). The unchanged run must cost the listing alone: the server's request log counts the
objects it fetched (none). Usage:

    .venv/bin/python -m bench.s3_bench
    .venv/bin/python -m bench.s3_bench --objects 2000 --json

Reports: objects put, the first index (seconds, objects/s, objects fetched), the listing alone,
the unchanged re-run (seconds, objects fetched, list requests), the process's peak RSS, and the
machine's load average. Moto keeps objects in memory and answers a list page in about 0.2 s; a real
store (MinIO, S3) answers faster, so these are upper bounds of Citadel's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

BUCKET = "bench-bucket"


def _environment(home: Path) -> None:
    from citadel.testing.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)
    os.environ.update({
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY, "AWS_REGION": "us-east-1",
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"), "AWS_CONFIG_FILE": str(home / "none"), "AWS_EC2_METADATA_DISABLED": "true",
    })


async def run(objects: int, root: Path) -> dict[str, Any]:
    from citadel.documents import list_source
    from citadel.indexing import answer_unchanged, index_source
    from citadel.resources import Resources
    from citadel.settings import Settings
    from citadel.testing.corpus import paragraph
    from citadel.testing.s3server import start_s3_server

    _environment(root)
    import random

    rng = random.Random(7)
    with start_s3_server(root / "moto") as server:
        server.create_bucket(BUCKET)
        await server.put_objects(BUCKET, {f"docs/{n:06d}.md": f"# Note {n}\n\n{paragraph(rng, 60)}".encode() for n in range(objects)},
                                 concurrency=16)
        uri = f"s3://{BUCKET}/docs"
        settings = Settings(data_dir=root / "data", s3_endpoint_url=server.url)

        mark = server.mark()
        started = time.perf_counter()
        resources = Resources(settings)
        try:
            first = await index_source(resources, uri, "s3bench")
        finally:
            await resources.aclose()
        first_s = time.perf_counter() - started
        first_gets = len(server.object_gets(mark))

        started = time.perf_counter()
        listing = await asyncio.to_thread(list_source, uri, (), None, settings)
        listing_s = time.perf_counter() - started

        mark = server.mark()
        started = time.perf_counter()
        again = await answer_unchanged(settings, uri, "s3bench")
        again_s = time.perf_counter() - started
        assert again is not None, "the unchanged run found something to do"
        return {
            "objects": objects,
            "first_index": {"seconds": round(first_s, 2), "objects_per_s": round(objects / first_s), "added": first.added,
                            "objects_fetched": first_gets},
            "listing_alone_s": round(listing_s, 2),
            "unchanged_rerun": {"seconds": round(again_s, 2), "unchanged": again.unchanged,
                                "objects_fetched": len(server.object_gets(mark)), "list_requests": len(server.lists(mark))},
            "listed": listing.count,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        result = asyncio.run(run(args.objects, Path(root)))
    if args.json:
        print(json.dumps(result))
        return
    first, again = result["first_index"], result["unchanged_rerun"]
    print(f"{result['objects']:,} objects on a local S3 server (load {result['load_average']})")
    print(f"first index      {first['seconds']:>7.2f} s  {first['objects_per_s']:>6,} objects/s  {first['objects_fetched']:,} fetched")
    print(f"listing alone    {result['listing_alone_s']:>7.2f} s")
    print(f"unchanged re-run {again['seconds']:>7.2f} s  {again['objects_fetched']} fetched, {again['list_requests']} list requests")
    print(f"peak RSS         {result['peak_rss_mb']:>7} MB")


if __name__ == "__main__":
    main()
