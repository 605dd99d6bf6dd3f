"""Benchmark: what lexical vectors cost a first index, and what adding them to an older collection costs.

Indexes a BEIR-format corpus (SciFact beside the clone by default) as JSONL records through
``index_source``, fresh each time: once into collections made as before lexical vectors (dense
only), once as now; then rebuilds the dense-only collection blue-green (``build_and_switch``, what
``citadel index --blue-green`` runs) in a new process's state, which must reuse every stored vector.
Usage:

    .venv/bin/python -m bench.lexical_bench [FOLDER] [--runs 2] [--flow] [--set embedder=hashing] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.quality import DEFAULT_SET, read_corpus, write_records


@contextmanager
def dense_only() -> Iterator[None]:
    """Collections made as before lexical vectors: an unnamed dense vector and nothing else."""
    from qdrant_client import models

    import citadel.store.localclients as localclients
    import citadel.store.vectorstore as vectorstore

    def create(client: Any, name: str, dimensions: int, model: str) -> None:
        client.create_collection(name, vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE),
                                 metadata={"model": model, "dimensions": dimensions, "created_by": "citadel"})

    saved = localclients.create_collection
    localclients.create_collection = vectorstore.create_collection = create  # type: ignore[assignment]
    try:
        yield
    finally:
        localclients.create_collection = vectorstore.create_collection = saved  # type: ignore[assignment]


async def timed(run: str, records: Path, data: Path, overrides: dict[str, str]) -> tuple[float, Any]:
    """``index_source`` (``run`` "index") or ``build_and_switch`` ("rebuild") of ``records``, timed, on a fresh Resources."""
    from citadel.indexing import build_and_switch, index_source
    from citadel.resources import Resources
    from citadel.settings import Settings

    resources = Resources(Settings(data_dir=data, **overrides))  # type: ignore[arg-type]
    operation = index_source if run == "index" else build_and_switch
    try:
        started = time.perf_counter()
        summary = await operation(resources, str(records), "bench")
        return time.perf_counter() - started, summary
    finally:
        await resources.aclose()


async def first_index(records: Path, data: Path, overrides: dict[str, str]) -> tuple[float, Any]:
    return await timed("index", records, data, overrides)


async def first_index_by_flow(records: Path, data: Path, overrides: dict[str, str]) -> tuple[float, Any]:
    """The same first index through the index-corpus flow (what `citadel index` runs), on the
    temporary local Prefect server: its embedding of a batch overlaps the writing of the one before."""
    import os

    from citadel.models import RunSummary
    from flows.index_corpus import index_corpus

    os.environ["CITADEL_DATA_DIR"] = str(data)
    for key, value in overrides.items():
        os.environ[f"CITADEL_{key.upper()}"] = value
    started = time.perf_counter()
    summary = await index_corpus(str(records), collection="bench")
    return time.perf_counter() - started, RunSummary.model_validate(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_SET)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--flow", action="store_true", help="index through the index-corpus flow, not the plain loop")
    parser.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    times: dict[str, list[float]] = {"dense only": [], "with lexical": []}
    with tempfile.TemporaryDirectory() as work:
        records = write_records(read_corpus(args.folder), Path(work) / "corpus.jsonl")
        if args.flow:  # the temporary Prefect server starts at the first flow run: not part of either measure
            warm = Path(work) / "warm.jsonl"
            warm.write_text(json.dumps({"id": "w", "text": "warm up"}) + "\n")
            asyncio.run(first_index_by_flow(warm, Path(work) / "warm", overrides))
        for run in range(args.runs):
            for label in times:  # alternated, so that the machine's drift falls on both
                data = Path(work) / f"{label.replace(' ', '-')}-{run}"
                index = first_index_by_flow if args.flow else first_index
                with dense_only() if label == "dense only" else contextlib.nullcontext():
                    seconds, summary = asyncio.run(index(records, data, overrides))
                times[label].append(seconds)
        legacy = Path(work) / "dense-only-0"
        rebuild_s, rebuilt = asyncio.run(timed("rebuild", records, legacy, overrides))
    dense, lexical = statistics.median(times["dense only"]), statistics.median(times["with lexical"])
    result = {
        "documents": summary.added, "chunks": summary.chunks_embedded + summary.cache_hits,
        "first_index_s": {"dense only": round(dense, 2), "with lexical": round(lexical, 2)},
        "lexical_cost": round(lexical / dense - 1, 3), "runs": {k: [round(v, 2) for v in vs] for k, vs in times.items()},
        "rebuild_s": round(rebuild_s, 2), "rebuild_embedded": rebuilt.chunks_embedded, "rebuild_reused": rebuilt.chunks_reused,
        "rebuild_cache_hits": rebuilt.cache_hits,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['documents']:,} documents, {result['chunks']:,} chunks; first index (median of {args.runs}): "
          f"dense only {dense:.2f} s, with lexical vectors {lexical:.2f} s ({result['lexical_cost']:+.1%})")
    print(f"blue-green rebuild of the dense-only collection, adding lexical vectors: {rebuild_s:.2f} s, "
          f"{rebuilt.chunks_reused:,} vectors reused, {rebuilt.chunks_embedded} embedded, {rebuilt.cache_hits} from the cache")


if __name__ == "__main__":
    main()
