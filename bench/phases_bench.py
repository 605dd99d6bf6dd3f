"""Benchmark: the three runs a user waits for, each a `citadel index` process of its own.

First index, unchanged re-run (as `citadel index` answers it, and as a flow run with
``--always-flow``), and an edited corpus (a paragraph appended to 10% of the
documents, 5% deleted, seeded), against an Ollama-protocol embedding server that embeds one
request at a time (about 840 texts/s by default) and a Prefect server kept running. The vectors
go to the embedded Qdrant store, or with ``--store server`` to the Qdrant REST test server (which
stays open, like a real one). A plain loop (the core objects, no Prefect) indexes the same corpus
once, and so does a plain sequential loop (read, chunk, embed, upsert into embedded Qdrant: what a
user would write without a framework), for the memory comparison. Usage:

    .venv/bin/python -m bench.phases_bench --files 3000 --paragraphs 23 --markdown
    .venv/bin/python -m bench.phases_bench --files 3000 --paragraphs 23 --markdown --warm --no-loop

``--warm`` runs every command from a warm process (``citadel warm start``), as a user running
commands in a row can. ``--edits N`` runs N edited phases in a row, each a new seeded edit, and
reports their median: one run on a shared machine says little.

Each phase reports the whole process's wall time and peak RSS, the flow's own time, texts
embedded, points written and deleted, the count check (points equal to registry chunks), and,
from the Prefect server's task runs, the time of each step; and the CPU seconds of the command,
the Prefect server and the Qdrant test server during it (the machine's cores are shared).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.index_bench import EDIT_SEED, edit_corpus

REPO = Path(__file__).resolve().parents[1]
MODEL = "nomic-embed-text"


def tree_cpu_s(root: int) -> float:
    """CPU seconds used so far by a process and its descendants (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[int, tuple[int, float]] = {}  # pid: (parent, seconds)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += used.get(pid, (0, 0.0))[1]
        todo.extend(child for child, (parent, _) in used.items() if parent == pid)
    return total


def citadel(args: list[str], env: dict[str, str], warm: bool = False) -> tuple[float, float, float, Any]:
    """Run ``citadel ARGS --json`` in a process of its own: (wall seconds, its peak RSS in MB, its
    CPU seconds, the JSON it printed).

    With ``warm`` the command runs in a fork of a warm process (``citadel warm start``): the peak
    RSS and the CPU are the fork's, as the warm process reports them."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "cli", *args, "--json"], cwd=REPO, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage: its peak resident memory
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        printed, errors = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"citadel {' '.join(args)} exited {proc.returncode}:\n{printed[-2000:]}\n{errors[-4000:]}")
    peak, cpu = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
    if warm:
        status = subprocess.run([sys.executable, "-m", "cli", "warm", "status", "--json"], cwd=REPO, env=env,
                                capture_output=True, text=True, check=True)
        ended = json.loads(status.stdout)["recent"][-1]
        peak, cpu = ended["peak_rss_mb"], ended["cpu_s"]
    return wall, peak, cpu, json.loads(printed)


# The servers a phase's CPU is counted for besides the command (a 2-core machine shares its cores).
SERVERS: dict[str, int] = {}


def counts(env: dict[str, str], collection: str) -> tuple[int, int]:
    """(points in the store, chunks in the registry), read by `citadel status` in a process of its own."""
    *_, status = citadel(["status"], env)
    entry = next(c for c in status["collections"] if c["collection"] == collection)
    return entry["vectors"], entry["chunks"]


def steps(api_url: str, flow_run_id: str) -> dict[str, float]:
    """Seconds spent in each task of a flow run, added up by task (Prefect's own record of the run)."""
    import httpx

    body = {"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
    total: dict[str, float] = defaultdict(float)
    offset = 0
    while True:
        page = httpx.post(f"{api_url}/task_runs/filter", json={**body, "offset": offset}, timeout=30).json()
        for task_run in page:
            total[task_run["name"].split(" ")[0]] += task_run["total_run_time"]  # "upsert 128 points (batch 3)": upsert
        if len(page) < 200:
            break
        offset += 200
    return dict(total)


def phase(name: str, corpus: Path, env: dict[str, str], api_url: str, *options: str, warm: bool = False) -> dict[str, Any]:
    """One `citadel index` run of the corpus and what it did."""
    before_points, _ = counts(env, "bench") if name != "first index" else (0, 0)
    servers_before = {server: tree_cpu_s(pid) for server, pid in SERVERS.items()}
    wall, peak, command_cpu, summary = citadel(["index", str(corpus), "--collection", "bench", *options], env, warm)
    cpu = {"command": command_cpu, **{server: tree_cpu_s(pid) - servers_before[server] for server, pid in SERVERS.items()}}
    points, chunks = counts(env, "bench")
    return {
        "phase": name,
        "wall_s": wall,
        "flow_s": summary["duration_s"],
        "peak_rss_mb": peak,
        "texts_embedded": summary["chunks_embedded"],
        "cache_hits": summary["cache_hits"],
        "points_written": summary["chunks_written"],
        # Every write makes a new id (a point id means the chunk exactly as it is), so what went is the difference.
        "points_deleted": before_points + summary["chunks_written"] - points,
        "documents": {key: summary[key] for key in ("added", "updated", "unchanged", "deleted", "failed")},
        "store_opened": summary["vector_store_opened"],
        "points": points,
        "registry_chunks": chunks,
        "cpu_s": cpu,
        # A run with nothing to do is answered without a flow run: no steps to read.
        "steps_s": steps(api_url, summary["flow_run_id"]) if summary["flow_run_id"] else None,
    }


PLAIN_LOOP = """
import asyncio, json, resource, sys, time
from citadel.indexing import index_source
from citadel.resources import Resources
from citadel.settings import Settings

async def main():
    resources = Resources(Settings())
    start = time.perf_counter()
    summary = await index_source(resources, sys.argv[1], sys.argv[2])
    seconds = time.perf_counter() - start
    await resources.aclose()
    return {"seconds": seconds, "chunks": summary.chunks_written}

report = asyncio.run(main())
report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(report))
"""

SEQUENTIAL_LOOP = """
import json, resource, sys, time, uuid, warnings
from pathlib import Path
import httpx
from qdrant_client import QdrantClient, models
from citadel.documents.chunking import chunk_text

warnings.simplefilter("ignore")
corpus, store, url, model = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
start = time.perf_counter()
client = QdrantClient(path=store)
client.create_collection("plain", vectors_config=models.VectorParams(size=768, distance=models.Distance.COSINE))
http = httpx.Client(base_url=url, timeout=120)
chunks = 0
for path in sorted(corpus.iterdir()):
    texts = [chunk.text for chunk in chunk_text(path.read_text())]
    for first in range(0, len(texts), 64):
        part = texts[first:first + 64]
        vectors = http.post("/api/embed", json={"model": model, "input": part}).raise_for_status().json()["embeddings"]
        client.upsert("plain", points=[
            models.PointStruct(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{path}#{first + n}")), vector=vector,
                               payload={"text": text, "source": str(path), "chunk_index": first + n})
            for n, (text, vector) in enumerate(zip(part, vectors))
        ])
        chunks += len(part)
print(json.dumps({"seconds": time.perf_counter() - start, "chunks": chunks,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

STORE_OPEN = """
import json, resource, sys, time
start = time.perf_counter()
import qdrant_client
client = qdrant_client.QdrantClient(path=sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start, "points": client.count("bench").count,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def python(code: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a snippet in a fresh interpreter and return the JSON it prints; its whole time is added as wall_s."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"a benchmark process failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--paragraphs", type=int, default=23, help="per file; 23 makes about 20 chunks of 1,000 characters")
    parser.add_argument("--texts-per-s", type=float, default=840.0, help="the embedding server's serial speed")
    parser.add_argument("--store", choices=["embedded", "server"], default="embedded")
    parser.add_argument("--no-loop", action="store_true", help="skip the plain loop")
    parser.add_argument("--prefect-postgres", metavar="URL", help="run Prefect's server on this Postgres instead of SQLite")
    parser.add_argument("--warm", action="store_true", help="run every command from a warm process (citadel warm start)")
    parser.add_argument("--edits", type=int, default=1, metavar="N",
                        help="edited phases in a row, each a new seeded edit: this machine's noise needs a median")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from citadel.testing.corpus import write_corpus

    with tempfile.TemporaryDirectory(prefix="citadel-phases-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        corpus = root / "corpus"
        write_corpus(corpus, files=args.files, paragraphs=args.paragraphs, seed=2026)
        size_mb = sum(p.stat().st_size for p in corpus.iterdir()) / 1e6
        env, api_url, prefect_server = start_servers(args, root, stack)
        report: dict[str, Any] = {"files": args.files, "corpus_mb": round(size_mb, 1), "store": args.store,
                                  "prefect_server": prefect_server, "texts_per_s": args.texts_per_s}
        if args.warm:
            env["XDG_RUNTIME_DIR"] = stack.enter_context(tempfile.TemporaryDirectory(prefix="cw-"))  # short, for a socket
            report["warm_start"] = citadel(["warm", "start"], env)[-1]
            stack.callback(subprocess.run, [sys.executable, "-m", "cli", "warm", "stop"], cwd=REPO, env=env, capture_output=True)
        run_phases(report, corpus, env, api_url, edits=args.edits, warm=args.warm)
        if args.store == "embedded":
            report["store_open"] = python(STORE_OPEN, [str(root / "data" / "qdrant")], env)
        if not args.no_loop:
            fresh = root / "loop-corpus"
            write_corpus(fresh, files=args.files, paragraphs=args.paragraphs, seed=2026)
            loop_env = {**env, "CITADEL_DATA_DIR": str(root / "loop")}
            report["plain_loop"] = python(PLAIN_LOOP, [str(fresh), "bench_loop"], loop_env)
            report["sequential_loop"] = python(
                SEQUENTIAL_LOOP, [str(fresh), str(root / "sequential-qdrant"), env["CITADEL_OLLAMA_URLS"], MODEL], env
            )
    print(json.dumps(report, indent=2))
    if args.markdown:
        print()
        print(markdown(report))


def start_servers(args: argparse.Namespace, root: Path, stack: contextlib.ExitStack) -> tuple[dict[str, str], str, str]:
    """The embedding server, the Prefect server and with ``--store server`` the Qdrant test server,
    stopped by ``stack``: the commands' environment, Prefect's API URL, and which database Prefect uses."""
    from citadel.testing.prefect_server import PrefectServer, create_prefect_database
    from citadel.testing.qdrant_process import start_qdrant_process, stop_qdrant_process

    embedder = subprocess.Popen(
        [sys.executable, "-m", "tests.support.embedding_server", "--serial", f"0,{1 / args.texts_per_s}"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    stack.callback(embedder.wait, 10)
    stack.callback(embedder.terminate)
    assert embedder.stdout is not None
    embedder_url = embedder.stdout.readline().strip().split("=", 1)[1]

    database = None
    if args.prefect_postgres:
        database = asyncio.run(create_prefect_database(args.prefect_postgres, "citadel_bench_prefect"))
    prefect = stack.enter_context(PrefectServer(root / "prefect", database_url=database))
    SERVERS["Prefect server"] = prefect.processes[0].pid
    env = {
        **prefect.env(),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "CITADEL_DATA_DIR": str(root / "data"),
        "CITADEL_EMBEDDER": "ollama",
        "CITADEL_OLLAMA_URLS": embedder_url,
        "CITADEL_EMBEDDING_MODEL": MODEL,
    }
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    if args.store == "server":
        server, qdrant_url = start_qdrant_process(root / "qdrant-server", timeout=120)
        stack.callback(stop_qdrant_process, server)
        SERVERS["Qdrant test server"] = server.pid
        env["CITADEL_QDRANT_URL"] = qdrant_url
    return env, prefect.api_url, "postgres" if database else "sqlite"


def run_phases(report: dict[str, Any], corpus: Path, env: dict[str, str], api_url: str, *, edits: int, warm: bool) -> None:
    """The first index, the unchanged re-runs, and ``edits`` edited runs, into ``report``."""
    phases = [phase("first index", corpus, env, api_url, warm=warm)]
    phases.append(phase("unchanged re-run", corpus, env, api_url, warm=warm))
    forced = "unchanged re-run as a flow run (--always-flow)"
    phases.append(phase(forced, corpus, env, api_url, "--always-flow", warm=warm))
    for run in range(edits):
        edited, deleted = edit_corpus(corpus, seed=EDIT_SEED + run)
        report.setdefault("edited", edited)
        report.setdefault("deleted", deleted)
        phases.append(phase("edited" if run == 0 else f"edited again ({run + 1})", corpus, env, api_url, warm=warm))
    report["edited_median_s"] = statistics.median(p["wall_s"] for p in phases if p["phase"].startswith("edited"))
    report["phases"] = phases


def markdown(report: dict[str, Any]) -> str:
    """The phase table of docs/benchmarks.md."""
    rows = [
        "| phase | whole process | flow | peak RSS | texts embedded | points written | points deleted | points = registry chunks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in report["phases"]:
        rows.append(
            f"| {p['phase']} | {p['wall_s']:.2f} s | {p['flow_s']:.2f} s | {p['peak_rss_mb']:.0f} MB | {p['texts_embedded']:,} "
            f"| {p['points_written']:,} | {p['points_deleted']:,} | {p['points']:,} = {p['registry_chunks']:,} |"
        )
    for key, name in (("plain_loop", "Citadel's core without Prefect, first index"),
                      ("sequential_loop", "plain sequential loop (read, chunk, embed, upsert), first index")):
        loop = report.get(key)
        if loop:
            rows.append(f"| {name} | {loop['wall_s']:.2f} s | {loop['seconds']:.2f} s | {loop['peak_rss_mb']:.0f} MB "
                        f"| {loop['chunks']:,} | {loop['chunks']:,} | | |")
    lines = ["\n".join(rows), ""]
    for p in report["phases"]:
        if p["steps_s"] is None:
            lines.append(f"- {p['phase']}: no flow run (nothing to do); the flow column is the run's own time")
            continue
        spent = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in sorted(p["steps_s"].items(), key=lambda kv: -kv[1]))
        cpu = ", ".join(f"{who} {seconds:.2f} s" for who, seconds in p["cpu_s"].items())
        lines.append(f"- {p['phase']}: {spent}; CPU: {cpu}")
    if len([p for p in report["phases"] if p["phase"].startswith("edited")]) > 1:
        lines.append(f"- edited phases, median of the whole process: {report['edited_median_s']:.2f} s")
    if "store_open" in report:
        opened = report["store_open"]
        lines.append(f"- opening the embedded store ({opened['points']:,} points) in a fresh process: "
                     f"{opened['wall_s']:.2f} s with the import, {opened['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
