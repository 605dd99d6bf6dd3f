"""Benchmark: back up, verify and restore a collection of about 10,000 chunks, and the recovery time.

The recovery time (RTO) is the restore plus the first search served afterwards by a new process
(which loads the restored store). Every step runs as the ``citadel`` command an operator would
type, in its own process, so start-up costs are counted. Usage:

    .venv/bin/python -m bench.backup_bench --chunks 10000 [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

prints a JSON report per backend (the embedded defaults, and a Postgres registry when given).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from citadel.testing.postgres import admin_execute

REPO = Path(__file__).resolve().parents[1]
CITADEL = [sys.executable, "-m", "cli"]


def _citadel(*args: str, env: dict[str, str]) -> tuple[float, dict[str, Any] | list[Any]]:
    start = time.perf_counter()
    done = subprocess.run([*CITADEL, *args, "--json"], capture_output=True, text=True, env=env, cwd=REPO, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"citadel {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return seconds, json.loads(done.stdout)


def _index(corpus: Path, env: dict[str, str]) -> dict[str, Any]:
    """Index through the core in a child process (no Prefect: the benchmark is about backups)."""
    code = (
        "import asyncio, json, sys\n"
        "from citadel.testing.corpus import index_with_own_backends\n"
        "print(json.dumps(asyncio.run(index_with_own_backends(sys.argv[1], 'documents')).to_json()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(corpus)], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def run(kind: str, root: Path, corpus: Path, admin: str | None) -> dict[str, Any]:
    data = root / f"data-{kind}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITADEL_")}
    env["CITADEL_DATA_DIR"] = str(data)
    database = None
    if kind == "postgres":
        assert admin
        database = f"citadel_backup_bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(admin_execute(f"CREATE DATABASE {database}", admin))
        env["CITADEL_DATABASE_URL"] = admin.rsplit("/", 1)[0] + f"/{database}"
    try:
        summary = _index(corpus, env)
        report: dict[str, Any] = {"registry": kind, "documents": summary["added"], "chunks": summary["chunks_written"]}
        backups = root / f"backups-{kind}"
        report["create_s"], made = _citadel("backup", "create", "--to", str(backups), env=env)
        assert isinstance(made, dict)
        report["backup_bytes"] = made["bytes"]
        files = json.loads((Path(made["path"]) / "manifest.json").read_text())["files"]
        report["registry_bytes"] = sum(entry["bytes"] for name, entry in files.items() if name.startswith("registry."))
        report["verify_s"], _ = _citadel("backup", "verify", made["path"], env=env)
        _, before = _citadel("search", "vector cache latency", "--limit", "5", env=env)
        shutil.rmtree(data)
        if database and admin:
            asyncio.run(admin_execute(f"DROP DATABASE {database} WITH (FORCE)", admin))
            asyncio.run(admin_execute(f"CREATE DATABASE {database}", admin))
        report["restore_s"], _ = _citadel("backup", "restore", made["path"], env=env)
        report["first_search_s"], after = _citadel("search", "vector cache latency", "--limit", "5", env=env)
        report["rto_s"] = report["restore_s"] + report["first_search_s"]
        report["same_top5"] = [h["id"] for h in before] == [h["id"] for h in after]  # type: ignore[index]
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in report.items()}
    finally:
        if database and admin:
            asyncio.run(admin_execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)", admin))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=10_000, help="About how many chunks to index.")
    parser.add_argument("--postgres", help="An admin URL of a Postgres server: also measure a Postgres registry.")
    args = parser.parse_args()
    from citadel.testing.corpus import write_corpus

    with tempfile.TemporaryDirectory(prefix="citadel-backup-bench-") as tmp:
        root = Path(tmp)
        # A file of 12 generated paragraphs makes about 10.6 chunks at the default chunk settings.
        write_corpus(root / "corpus", files=max(1, round(args.chunks / 10.6)), paragraphs=12)
        results = [run("sqlite", root, root / "corpus", None)]
        if args.postgres:
            results.append(run("postgres", root, root / "corpus", args.postgres))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
