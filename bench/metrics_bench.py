"""What one Prometheus scrape of the API costs with 10 collections and 1,000 indexing runs recorded,
and 1,000 flow runs on a Prefect server.

    python -m bench.metrics_bench                 # registry and the Prefect server on the local Postgres
    python -m bench.metrics_bench --runs 10000    # more history: the scrape should not grow with it

Measured: the registry's figures alone (median of 50 reads); the Prefect figures' first read (the
seed: one count per deployment and state), a quiet read (nothing ended since) and the read after 100
more runs ended; whole ``GET /metrics`` scrapes of a running ``citadel api`` with nothing cached
(median and p95 of 12). Needs the local Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from citadel.apikeys import ApiKeys
from citadel.ops import registry_families
from citadel.registry import Registry
from citadel.testing.api_process import ApiProcess
from citadel.testing.prefect_server import PrefectServer, create_prefect_database

POSTGRES_URL = os.environ.get("CITADEL_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def record_runs(registry: Registry, prefix: str, collections: int, runs: int) -> None:
    for i in range(runs):
        run_id = await registry.start_run(f"{prefix}_{i % collections}", f"/data/source-{i % 3}", None)
        status = "failed" if i % 17 == 0 else "completed"
        await registry.finish_run(run_id, status, {"added": 5, "unchanged": 40, "chunks_embedded": 25, "duration_s": 1.2})


async def time_registry(registry: Registry, reads: int = 50) -> float:
    spent = []
    for _ in range(reads):
        started = time.perf_counter()
        await registry_families(registry)
        spent.append(time.perf_counter() - started)
    return statistics.median(spent)


async def record_flow_runs(api_url: str, count: int) -> None:
    """``count`` flow runs without a deployment, ended Completed or Failed, as runs that happened."""
    async with httpx.AsyncClient(base_url=api_url + "/", timeout=60) as client:
        flow = (await client.post("flows/", json={"name": "bench-metrics"})).raise_for_status().json()
        semaphore = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with semaphore:
                made = await client.post("flow_runs/", json={"flow_id": flow["id"], "state": {"type": "RUNNING"}})
                state = {"type": "FAILED" if i % 10 == 0 else "COMPLETED"}
                await client.post(f"flow_runs/{made.raise_for_status().json()['id']}/set_state", json={"state": state, "force": True})

        await asyncio.gather(*(one(i) for i in range(count)))


async def time_prefect(api_url: str, flow_runs: int) -> dict[str, float]:
    """The first read (the seed), a quiet read (nothing ended since), and the read after 100 runs ended."""
    from orchestration.prefect_metrics import LAG, PrefectFigures

    figures = PrefectFigures(api_url, cache_s=0)

    async def timed() -> float:
        started = time.perf_counter()
        await figures.families()
        return (time.perf_counter() - started) * 1000

    try:
        await record_flow_runs(api_url, flow_runs)
        await asyncio.sleep(LAG.total_seconds() + 1)  # the history is history: nothing ended within the re-read window
        seed = await timed()
        quiet = statistics.median([await timed() for _ in range(20)])
        await record_flow_runs(api_url, 100)
        after_100 = await timed()
        return {"prefect_seed_ms": round(seed, 1), "prefect_quiet_ms": round(quiet, 1), "prefect_after_100_ended_ms": round(after_100, 1)}
    finally:
        await figures.aclose()


def time_scrapes(url: str, key: str, scrapes: int, every_s: float) -> tuple[float, float, int]:
    """Scrapes ``every_s`` apart: more than the API keeps its Prefect figures and health checks (5 s),
    so each one pays for every source, as Prometheus's 15 s scrapes do."""
    spent = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for _ in range(scrapes):
            started = time.perf_counter()
            response = client.get("/metrics")
            spent.append(time.perf_counter() - started)
            response.raise_for_status()
            time.sleep(every_s)
    spent.sort()
    return statistics.median(spent), spent[max(0, int(len(spent) * 0.95) - 1)], len(response.content)


async def create_key(database_url: str) -> str:
    registry = Registry(database_url)
    await registry.init()
    try:
        return (await ApiKeys(registry).create("bench-prometheus", ["metrics"], collections="*")).key
    finally:
        await registry.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collections", type=int, default=10)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--flow-runs", type=int, default=1000)
    args = parser.parse_args()
    results: dict[str, Any] = {"collections": args.collections, "runs": args.runs, "flow_runs": args.flow_runs}
    with tempfile.TemporaryDirectory(prefix="citadel-metrics-bench-") as tmp:
        root = Path(tmp)
        database = f"{POSTGRES_URL.rsplit('/', 1)[0]}/bench_metrics_{uuid.uuid4().hex[:8]}"
        asyncio.run(_on_server(database, 'CREATE DATABASE "{name}"'))
        prefect_database = database
        try:
            registry = Registry(database)
            asyncio.run(_prepare(registry, args, results))
            prefect_database = asyncio.run(create_prefect_database(POSTGRES_URL, f"bench_metrics_prefect_{uuid.uuid4().hex[:8]}"))
            with PrefectServer(root / "prefect", prefect_database) as prefect:
                results.update(asyncio.run(time_prefect(prefect.api_url, args.flow_runs)))
                key = asyncio.run(create_key(database))
                env = {**os.environ, "CITADEL_DATA_DIR": str(root / "data"), "CITADEL_DATABASE_URL": database,
                       "PREFECT_API_URL": prefect.api_url,
                       "CITADEL_API_RATE_LIMITS": "100000/minute"}
                with ApiProcess(env, root).start() as api:
                    time_scrapes(api.url, key, 2, 0)  # warm: the Prefect seed, connections
                    median, p95, size = time_scrapes(api.url, key, 12, 5.5)
                results.update(scrape_median_ms=round(median * 1000, 1), scrape_p95_ms=round(p95 * 1000, 1), scrape_bytes=size)
        finally:
            asyncio.run(_on_server(database, 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            asyncio.run(_on_server(prefect_database, 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(json.dumps(results, indent=1))


async def _prepare(registry: Registry, args: argparse.Namespace, results: dict[str, Any]) -> None:
    await registry.init()
    started = time.perf_counter()
    await record_runs(registry, "bench", args.collections, args.runs)
    results["record_runs_s"] = round(time.perf_counter() - started, 1)
    results["registry_read_ms"] = round(await time_registry(registry) * 1000, 2)
    await registry.aclose()


def _admin_dsn(url: str) -> tuple[str, str]:
    base, name = url.rsplit("/", 1)
    return base.replace("postgresql+asyncpg://", "postgresql://") + "/postgres", name


async def _on_server(url: str, statement: str) -> None:
    """Run ``statement`` (with ``{name}``: the database of ``url``) on that database's server."""
    import asyncpg

    dsn, name = _admin_dsn(url)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement.format(name=name))
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
