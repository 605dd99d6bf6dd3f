"""Benchmark: how well search finds what people mean, on a BEIR-format evaluation set.

Indexes the set's corpus through Citadel itself (its records as a JSONL source, by the same
``index_source`` the workflow ``index`` step and the plain loop run), then runs every test query
through the same search users call (``search_with``, what ``citadel search`` and ``/api/v1/search``
run), ranks documents by their best chunk, and scores them against the set's judgments: nDCG@10
with graded gains (as BEIR's pytrec_eval computes it), recall@10 and recall@100, with the index
time and the search latency (p50, p95). Usage:

    .venv/bin/python -m bench.quality                      # ../shared/evalsets/scifact beside the clone
    .venv/bin/python -m bench.quality PATH/TO/BEIR/SET --queries 100 --documents 2000 --json
    .venv/bin/python -m bench.quality bench/evalsets/citadel-docs     # the project's own set (its docs' sections)
    .venv/bin/python -m bench.quality --set embedder=hashing --set search_dense_weight=0.2 --modes hybrid
    .venv/bin/python -m bench.quality --ollama-test-server             # the Ollama path's plumbing
    CITADEL_EMBEDDER=ollama CITADEL_OLLAMA_URLS=http://gpu:11434 .venv/bin/python -m bench.quality   # nomic-embed-text

A BEIR-format folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl``
(``_id``, ``text``) and ``qrels.tsv`` or ``qrels/test.tsv`` (``query-id``, ``corpus-id``, ``score``).
SciFact and the other BEIR sets are published by the BEIR project (github.com/beir-cellar/beir).
Settings come from the environment as for any run (``CITADEL_EMBEDDER``, ``CITADEL_OLLAMA_URLS``...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import re
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SET = REPO.parent / "shared" / "evalsets" / "scifact"
DOCS_SET = REPO / "bench" / "evalsets" / "citadel-docs"
CANDIDATES = 100  # chunks asked for per query, ranked by document


def slug(heading: str) -> str:
    """A heading as a section id: lowercase letters and digits, runs of anything else one ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


def sections_of(path: Path) -> list[dict[str, Any]]:
    """A Markdown file's ``##`` and ``###`` sections as BEIR records: ``FILE#slug``, the heading, the text under it."""
    records: list[dict[str, Any]] = []
    for part in re.split(r"^(?=#{2,3} )", path.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]:
        heading, _, body = part.partition("\n")
        title = heading.lstrip("#").strip()
        records.append({"_id": f"{path.name}#{slug(title)}", "title": title, "text": body.strip()})
    return records


def read_corpus(folder: Path) -> list[dict[str, Any]]:
    """``corpus.jsonl``, or the sections of the files ``corpus_from.txt`` names (relative to the repository)."""
    listed = folder / "corpus_from.txt"
    if not (folder / "corpus.jsonl").is_file() and listed.is_file():
        names = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]
        return [record for name in names for record in sections_of(REPO / name)]
    return [json.loads(line) for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def write_records(corpus: Iterable[dict[str, Any]], path: Path) -> Path:
    """A BEIR corpus as Citadel's JSONL records at ``path``: the title above the text, and as metadata."""
    with path.open("w", encoding="utf-8") as out:
        for doc in corpus:
            title = str(doc.get("title") or "").strip()
            text = f"{title}\n\n{doc['text']}" if title else str(doc["text"])
            out.write(json.dumps({"id": str(doc["_id"]), "text": text, "metadata": {"title": title}}) + "\n")
    return path


def read_set(folder: Path) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, dict[str, int]]]:
    """The corpus (records), the queries (id -> text) and the judgments (query id -> document id -> gain)."""
    corpus = read_corpus(folder)
    queries = {
        str(item["_id"]): str(item["text"])
        for line in (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip() and (item := json.loads(line))
    }
    qrels_path = folder / "qrels.tsv" if (folder / "qrels.tsv").exists() else folder / "qrels" / "test.tsv"
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(row["score"])
    return corpus, {qid: text for qid, text in queries.items() if qid in qrels}, qrels


def ndcg_at(ranked: Sequence[str], gains: dict[str, int], k: int = 10) -> float:
    """nDCG@k with graded gains: the sum of gain / log2(rank + 1) over the top k, over the ideal's."""
    dcg = sum(gains.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(sorted(gains.values(), reverse=True)[:k]))
    return dcg / ideal if ideal else 0.0


def recall_at(ranked: Sequence[str], gains: dict[str, int], k: int) -> float:
    """The share of the relevant documents (gain above 0) found in the top k."""
    relevant = {doc for doc, gain in gains.items() if gain > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def by_document(hits: Iterable[Any], prefix: str = "") -> list[str]:
    """Document ids in the order of their best chunk (hits come nearest first), without ``prefix``
    (a JSONL record's id is its file's path, ``#`` and the record's own id)."""
    ranked: list[str] = []
    seen: set[str] = set()
    for hit in hits:
        doc = str(hit.document_id).removeprefix(prefix)
        if doc not in seen:
            seen.add(doc)
            ranked.append(doc)
    return ranked


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def slice_of(
    corpus: list[dict[str, Any]], queries: dict[str, str], qrels: dict[str, dict[str, int]], limit_queries: int | None,
    documents: int | None,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The first ``limit_queries`` queries, and a corpus of at most ``documents``: every document
    they judge, then the others in the set's order (a smaller, harder-to-miss slice for a quick check)."""
    chosen = dict(list(queries.items())[:limit_queries]) if limit_queries else queries
    if documents is None:
        return corpus, chosen
    judged = {doc for qid in chosen for doc in qrels[qid]}
    kept = [doc for doc in corpus if str(doc["_id"]) in judged]
    kept += [doc for doc in corpus if str(doc["_id"]) not in judged][: max(0, documents - len(kept))]
    return kept, chosen


async def run(
    folder: Path, limit_queries: int | None, work: Path, documents: int | None = None,
    modes: Sequence[str] = ("hybrid",), overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Index the set once, then score each of ``modes``; ``overrides``: settings to try (fusion, weights)."""
    from citadel.indexing import index_source
    from citadel.resources import Resources
    from citadel.settings import Settings

    corpus, queries, qrels = read_set(folder)
    corpus, queries = slice_of(corpus, queries, qrels, limit_queries, documents)
    records = write_records(corpus, work / "corpus.jsonl")
    settings = Settings(data_dir=work / "data", **(overrides or {}))
    resources = Resources(settings)
    try:
        started = time.perf_counter()
        summary = await index_source(resources, str(records), "quality")
        index_s = time.perf_counter() - started
        results = {mode: await score(resources, queries, qrels, f"{records}#", mode) for mode in modes}
    finally:
        await resources.aclose()
    return {
        "set": folder.name,
        "documents": len(corpus),
        "queries": len(queries),
        "embedder": resources.embedder.model,
        "settings": overrides or {},
        "chunks": summary.chunks_embedded + summary.chunks_reused + summary.cache_hits,
        "index_s": round(index_s, 1),
        "modes": results,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


async def score(resources: Any, queries: dict[str, str], qrels: dict[str, dict[str, int]], prefix: str, mode: str) -> dict[str, Any]:
    """Every query through the search users call (documents by their best chunk), scored."""
    from citadel.search import search_with

    scores: dict[str, list[float]] = {"ndcg@10": [], "recall@10": [], "recall@100": []}
    latencies: list[float] = []
    used: set[str] = set()  # dense, whatever was asked, for a collection without lexical vectors
    for qid, text in queries.items():
        started = time.perf_counter()
        found = await search_with(resources, text, "quality", limit=CANDIDATES, by_document=True, mode=mode)
        latencies.append((time.perf_counter() - started) * 1000)
        used.add(found.mode)
        ranked = by_document(found.hits, prefix)
        scores["ndcg@10"].append(ndcg_at(ranked, qrels[qid]))
        scores["recall@10"].append(recall_at(ranked, qrels[qid], 10))
        scores["recall@100"].append(recall_at(ranked, qrels[qid], 100))
    return {
        **{name: round(statistics.fmean(values), 4) for name, values in scores.items()},
        "search_ms_p50": round(percentile(latencies, 0.5), 1),
        "search_ms_p95": round(percentile(latencies, 0.95), 1),
        "searched_as": sorted(used),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_SET, help="a BEIR-format folder")
    parser.add_argument("--queries", type=int, default=None, help="only the first N test queries")
    parser.add_argument("--documents", type=int, default=None, help="a corpus of N: the judged documents of those queries, then others")
    parser.add_argument("--modes", default="dense,sparse,hybrid", help="search modes to score, comma-separated")
    parser.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                        help="a setting for this run (embedder=wordllama, search_dense_weight=0.2, ...); repeatable")
    parser.add_argument("--ollama-test-server", action="store_true",
                        help="embed through the tests' Ollama-protocol server (not semantic: the plumbing, not the quality)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (args.folder / "corpus.jsonl").is_file() and not (args.folder / "corpus_from.txt").is_file():
        parser.error(f"{args.folder} holds no corpus.jsonl; give a BEIR-format folder")
    overrides: dict[str, Any] = dict(item.split("=", 1) for item in args.set)
    with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as stack:
        if args.ollama_test_server:
            from tests.support.embedding_server import EmbeddingServer

            server = stack.enter_context(EmbeddingServer())
            overrides.update(embedder="ollama", ollama_urls=server.url)
        result = asyncio.run(run(args.folder, args.queries, Path(work), args.documents, args.modes.split(","), overrides))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['set']}: {result['documents']:,} documents, {result['queries']} queries, {result['embedder']}, "
          f"{result['chunks']:,} chunks, indexed in {result['index_s']} s (load {result['load_average']})")
    for mode, got in result["modes"].items():
        print(f"{mode:>7}: nDCG@10 {got['ndcg@10']:.3f}  recall@10 {got['recall@10']:.3f}  recall@100 {got['recall@100']:.3f}"
              f"  search p50 {got['search_ms_p50']} ms  p95 {got['search_ms_p95']} ms")


if __name__ == "__main__":
    main()
