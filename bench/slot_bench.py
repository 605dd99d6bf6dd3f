"""What a slot of the embedding backend's limit costs: take and give back, Prefect's ``concurrency()``
against Citadel's recorded slot, on a real ``prefect server start`` (SQLite) of its own.

    .venv/bin/python -m bench.slot_bench [--rounds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path


async def _rounds(rounds: int) -> dict[str, list[float]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.asyncio import concurrency

    from citadel.settings import Settings
    from tasks.limits import embedding_slot, limit_name

    settings = Settings(embedder="openai")
    name = limit_name(settings)
    async with get_client() as client:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    times: dict[str, list[float]] = {"prefect concurrency()": [], "citadel embedding_slot()": []}
    for _ in range(rounds):
        started = time.perf_counter()
        async with concurrency(name, occupy=1, strict=True):
            pass
        times["prefect concurrency()"].append(time.perf_counter() - started)
        started = time.perf_counter()
        async with embedding_slot(settings):
            pass
        times["citadel embedding_slot()"].append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    from citadel.testing.prefect_server import PrefectServer

    with tempfile.TemporaryDirectory() as home:
        server = PrefectServer(Path(home)).start()
        try:
            os.environ.update({key: value for key, value in server.env().items() if key.startswith("PREFECT_")})
            times = asyncio.run(_rounds(args.rounds))
        finally:
            server.stop()
    for what, seconds in times.items():
        ms = sorted(s * 1000 for s in seconds[1:])  # the first round starts the client
        print(f"{what:28s} take and give back: median {statistics.median(ms):6.1f} ms, p90 {ms[int(len(ms) * 0.9)]:6.1f} ms")


if __name__ == "__main__":
    main()
