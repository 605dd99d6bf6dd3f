"""Benchmark: does a first index keep its embedding servers busy?

A first index is bounded by embedding: a model server embeds one request at a time. This runs
``citadel index`` (the index-corpus flow, a process of its own, a Prefect server kept running) over a
generated corpus against N Ollama-protocol test servers, each a process of its own that embeds
serially at a set cost (``--cost 0.003,0.001``: 3 ms a request and 1 ms a text) and reports how
long it was busy. The embedding floor is the busiest server's busy time: a run can end no sooner.
Reported: the flow's time and the whole process's against the floor, each server's share, texts,
peak RSS, the CPU of every process, and the time of each step from Prefect's task runs. Usage:

    .venv/bin/python -m bench.saturation_bench --files 3000 --servers 1                 # embedded store
    .venv/bin/python -m bench.saturation_bench --files 3000 --servers 1 --store server
    .venv/bin/python -m bench.saturation_bench --files 3000 --servers 1,2,4 --store server
    .venv/bin/python -m bench.saturation_bench --files 3000 --servers 1 --cost 0,0 --store server   # the pipeline's ceiling
    .venv/bin/python -m bench.saturation_bench --files 30000 --servers 1 --cost 0,0 --store server --rerun

``--cost 0,0`` leaves only the server's own work (a vector per text from a hash, and JSON): what
the pipeline does with an embedder that answers at once. ``--rerun`` adds an unchanged re-run.
``--stall 30000:7`` holds the Qdrant test server 7 s at its first upsert past 30,000 points, as
it stalls when it doubles its vector array (at 524,287 points in a 30,000-document run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.phases_bench import REPO, citadel, steps, tree_cpu_s

MODEL = "nomic-embed-text"


def start_embedders(count: int, cost: str, stack: contextlib.ExitStack) -> list[tuple[str, int]]:
    """``count`` serial test servers, each a process: their (URL, pid)."""
    servers = []
    for _ in range(count):
        proc = subprocess.Popen([sys.executable, "-m", "tests.support.embedding_server", "--serial", cost],
                                cwd=REPO, stdout=subprocess.PIPE, text=True)
        stack.callback(proc.wait, 10)
        stack.callback(proc.terminate)
        assert proc.stdout is not None
        servers.append((proc.stdout.readline().strip().split("=", 1)[1], proc.pid))
    return servers


def counts_of(env: dict[str, str], collection: str) -> tuple[int, int]:
    """(points in the store, chunks in the registry) from `citadel status`."""
    *_, status = citadel(["status"], env)
    entry = next(c for c in status["collections"] if c["collection"] == collection)
    return entry["vectors"], entry["chunks"]


def server_stats(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/_stub/stats", timeout=10).json()


def task_times(api_url: str, flow_run_id: str) -> list[tuple[str, float, float]]:
    """Each task run of the flow run: (name, start, end) in epoch seconds."""
    import datetime as dt

    found, offset = [], 0
    while True:
        page = httpx.post(f"{api_url}/task_runs/filter", timeout=30, json={
            "task_runs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "offset": offset}).json()
        stamp = dt.datetime.fromisoformat
        found += [(run["name"], stamp(run["start_time"]).timestamp(), stamp(run["end_time"]).timestamp())
                  for run in page if run["start_time"] and run["end_time"]]
        if len(page) < 200:
            return sorted(found, key=lambda item: item[1])
        offset += 200


def profiled(output: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``citadel ARGS --json`` under py-spy, sampling every thread into ``output``: a speedscope
    file, or collapsed stacks with PROFILE_FORMAT=raw; idle samples too with PROFILE_IDLE=1. The command's JSON."""
    spy = Path(sys.executable).with_name("py-spy")
    options = ["--rate", "200", "--threads", "--format", os.environ.get("PROFILE_FORMAT", "speedscope"), "--output", output]
    if os.environ.get("PROFILE_IDLE"):
        options.append("--idle")
    command = [str(spy), "record", *options, "--", sys.executable, "-m", "cli", *args, "--json"]
    done = subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    return json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{"):])[0]


def timeline(api_url: str, flow_run_id: str, served: list[dict[str, Any]]) -> dict[str, float]:
    """When the servers first embedded and last finished, from the flow run's start (Prefect's record)."""
    import datetime as dt

    run = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=30).json()
    start = dt.datetime.fromisoformat(run["start_time"]).timestamp()
    end = dt.datetime.fromisoformat(run["end_time"]).timestamp()
    first = min(s["first_started"] for s in served if s["first_started"])
    last = max(s["last_finished"] for s in served if s["last_finished"])
    return {"flow_run_s": round(end - start, 3), "until_first_request_s": round(first - start, 3),
            "embedding_span_s": round(last - first, 3), "after_last_answer_s": round(end - last, 3)}


def one_run(corpus: Path, root: Path, count: int, args: argparse.Namespace, prefect: Any, qdrant_url: str | None) -> dict[str, Any]:
    """A first index of ``corpus`` into a fresh data folder with ``count`` servers (and an unchanged re-run)."""
    with contextlib.ExitStack() as stack:
        embedders = start_embedders(count, args.cost, stack)
        data = root / f"data-{count}-{time.monotonic_ns()}"
        env = {
            **prefect.env(), "PREFECT_LOGGING_LEVEL": "WARNING", "CITADEL_DATA_DIR": str(data), "CITADEL_EMBEDDER": "ollama",
            "CITADEL_OLLAMA_URLS": ",".join(url for url, _ in embedders), "CITADEL_EMBEDDING_MODEL": MODEL,
            **dict(setting.split("=", 1) for setting in args.set),
        }
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        collection = f"sat{count}_{time.monotonic_ns() % 10**8}"
        if qdrant_url:
            env["CITADEL_QDRANT_URL"] = qdrant_url
        pids = {"Prefect server": prefect.processes[0].pid, **{f"embedder {i + 1}": pid for i, (_, pid) in enumerate(embedders)}}
        if args.qdrant_pid:
            pids["Qdrant test server"] = args.qdrant_pid
        before = {name: tree_cpu_s(pid) for name, pid in pids.items()}
        if args.profile:  # the same command under py-spy (pip install py-spy): where each thread's time goes
            launched = time.time()
            summary = profiled(args.profile, ["index", str(corpus), "--collection", collection], env)
            wall, peak, cpu = time.time() - launched, 0.0, 0.0
            print(f"profile: {args.profile}, launched at {launched}", file=sys.stderr)
        else:
            wall, peak, cpu, summary = citadel(["index", str(corpus), "--collection", collection], env)
        served = [server_stats(url) for url, _ in embedders]
        if args.dump:
            Path(args.dump).write_text(json.dumps({"served": served, "tasks": task_times(prefect.api_url, summary["flow_run_id"])}))
        for stats in served:
            stats.pop("intervals", None)
        result: dict[str, Any] = {
            "servers": count, "wall_s": wall, "flow_s": summary["duration_s"], "peak_rss_mb": peak,
            "texts_embedded": summary["chunks_embedded"], "points_written": summary["chunks_written"],
            "busy_s": [s["busy_s"] for s in served], "requests": [s["requests"] for s in served],
            "texts": [s["texts"] for s in served],
            "cpu_s": {"command": cpu, **{name: tree_cpu_s(pid) - before[name] for name, pid in pids.items()}},
            "steps_s": steps(prefect.api_url, summary["flow_run_id"]),
        }
        points, chunks = counts_of(env, collection)
        result["points"], result["registry_chunks"] = points, chunks
        result["timeline_s"] = timeline(prefect.api_url, summary["flow_run_id"], served)
        floor = max(result["busy_s"])
        result["floor_s"] = floor
        result["flow_over_floor"] = round(result["flow_s"] / floor, 3) if floor else None
        result["wall_over_floor"] = round(wall / floor, 3) if floor else None
        result["chunks_per_s"] = round(result["points_written"] / result["flow_s"], 1)
        if args.rerun:
            again_wall, again_peak, _, again = citadel(["index", str(corpus), "--collection", collection], env)
            result["rerun"] = {"wall_s": again_wall, "peak_rss_mb": again_peak, "unchanged": again["unchanged"],
                               "texts_embedded": again["chunks_embedded"]}
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--paragraphs", type=int, default=23)
    parser.add_argument("--servers", default="1", help="comma-separated counts of serial servers, one run each")
    parser.add_argument("--cost", default="0.003,0.001", help="seconds per request,seconds per text of each server")
    parser.add_argument("--store", choices=["embedded", "server"], default="embedded")
    parser.add_argument("--rerun", action="store_true", help="add an unchanged re-run of each first index")
    parser.add_argument("--prefect-postgres", metavar="URL", help="run Prefect's server on this Postgres instead of SQLite")
    parser.add_argument("--profile", metavar="FILE", help="run the first index under py-spy into FILE (collapsed stacks)")
    parser.add_argument("--dump", metavar="FILE", help="write each request's time and each task run's to FILE (the last run)")
    parser.add_argument("--set", action="append", default=[], metavar="CITADEL_X=V", help="a setting for the runs")
    parser.add_argument("--stall", metavar="POINTS:SECONDS", help="the Qdrant test server holds one upsert that long past that many points")
    args = parser.parse_args()
    if args.stall:
        os.environ["QDRANT_TEST_STALL"] = args.stall  # read by the test server's process
    from citadel.testing.corpus import write_corpus
    from citadel.testing.prefect_server import PrefectServer, create_prefect_database
    from citadel.testing.qdrant_process import start_qdrant_process, stop_qdrant_process

    with tempfile.TemporaryDirectory(prefix="citadel-saturation-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        corpus = root / "corpus"
        write_corpus(corpus, files=args.files, paragraphs=args.paragraphs, seed=2026)
        database = asyncio.run(create_prefect_database(args.prefect_postgres, "citadel_bench_prefect")) if args.prefect_postgres else None
        prefect = stack.enter_context(PrefectServer(root / "prefect", database_url=database))
        qdrant_url, args.qdrant_pid = None, None
        if args.store == "server":
            server, qdrant_url = start_qdrant_process(root / "qdrant-server", timeout=120)
            stack.callback(stop_qdrant_process, server)
            args.qdrant_pid = server.pid
        report: dict[str, Any] = {"files": args.files, "corpus_mb": round(sum(p.stat().st_size for p in corpus.iterdir()) / 1e6, 1),
                                  "store": args.store, "cost": args.cost, "settings": args.set, "runs": []}
        for count in (int(part) for part in args.servers.split(",")):
            report["runs"].append(one_run(corpus, root, count, args, prefect, qdrant_url))
            print(json.dumps(report["runs"][-1]), file=sys.stderr, flush=True)
    first = report["runs"][0]["flow_s"]
    for run in report["runs"]:
        run["speedup"] = round(first / run["flow_s"], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
