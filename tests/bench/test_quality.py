"""The retrieval metrics of bench/quality.py, as BEIR computes them, and its reading of a BEIR-format set."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.quality import DOCS_SET, by_document, ndcg_at, read_set, recall_at, slug


def test_ndcg_uses_graded_gains_and_the_ideal_order() -> None:
    gains = {"a": 2, "b": 1}
    assert ndcg_at(["a", "b", "x"], gains) == 1.0
    swapped = (1 / math.log2(2) + 2 / math.log2(3)) / (2 / math.log2(2) + 1 / math.log2(3))
    assert math.isclose(ndcg_at(["b", "a"], gains), swapped)
    assert ndcg_at(["x"] * 10 + ["a"], gains) == 0.0, "only the top 10 count"
    assert ndcg_at(["a"], {}) == 0.0


def test_recall_counts_the_relevant_found_in_the_top_k() -> None:
    gains = {"a": 1, "b": 1, "c": 0}
    assert recall_at(["a", "x", "b"], gains, 2) == 0.5 and recall_at(["a", "x", "b"], gains, 3) == 1.0


def test_documents_are_ranked_by_their_best_chunk() -> None:
    hits = [SimpleNamespace(document_id=f"/tmp/corpus.jsonl#{doc}") for doc in ("7", "3", "7", "9#x")]
    assert by_document(hits, "/tmp/corpus.jsonl#") == ["7", "3", "9#x"]


def test_a_beir_folder_is_read_with_only_the_judged_queries(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "one"}\n{"_id": "d2", "title": "", "text": "two"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "unjudged"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    corpus, queries, qrels = read_set(tmp_path)
    assert [doc["_id"] for doc in corpus] == ["d1", "d2"] and queries == {"q1": "first"} and qrels == {"q1": {"d2": 1}}


def test_the_docs_set_is_read_from_the_sections_of_the_docs() -> None:
    """The project's own set: every judged section exists in the docs as they are now (a renamed
    heading fails here, naming the judgment to update)."""
    corpus, queries, qrels = read_set(DOCS_SET)
    ids = {doc["_id"] for doc in corpus}
    assert len(queries) >= 40 and len(ids) == len(corpus)
    missing = sorted({doc for judged in qrels.values() for doc in judged} - ids)
    assert not missing, f"judged sections no longer in the docs: {missing}; update {DOCS_SET / 'qrels.tsv'}"
    assert slug("Plain Prefect flows over Citadel's tasks") == "plain-prefect-flows-over-citadel-s-tasks"


SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "evalsets" / "scifact"
# Floors a little under what the embedded defaults measure (WordLlama, hybrid; 2026-12-07): the
# dense leg alone scores under each (0.655 and 0.764), so losing the lexical vectors fails them.
DOCS_FLOOR = 0.70  # measured 0.753 (sparse 0.714, dense 0.655) on the docs as they are
SCIFACT_FLOOR = 0.83  # measured 0.871 on the slice (sparse 0.854, dense 0.764)


@pytest.mark.system
async def test_search_quality_on_the_projects_own_set_stays_above_its_floor(data_dir: Path, tmp_path: Path) -> None:
    """48 questions about Citadel's docs, judged by hand, indexed and searched through Citadel: a change
    that makes search find less fails here; hybrid search finds at least what its better leg finds."""
    from bench.quality import run

    result = await run(DOCS_SET, None, tmp_path, modes=("dense", "sparse", "hybrid"))
    modes = result["modes"]
    assert modes["hybrid"]["ndcg@10"] >= DOCS_FLOOR, result
    assert modes["hybrid"]["ndcg@10"] >= max(modes["dense"]["ndcg@10"], modes["sparse"]["ndcg@10"]), result


@pytest.mark.system
async def test_search_quality_on_a_scifact_slice_stays_above_its_floor(data_dir: Path, tmp_path: Path) -> None:
    """60 SciFact queries over 1,200 abstracts (theirs and others), indexed and searched through Citadel."""
    from bench.quality import run

    assert (SCIFACT / "corpus.jsonl").is_file(), (
        f"BEIR SciFact is expected at {SCIFACT} (beside the clone); BEIR publishes it (github.com/beir-cellar/beir)"
    )
    result = await run(SCIFACT, 60, tmp_path, documents=1200, modes=("hybrid",))
    assert result["queries"] == 60 and result["documents"] == 1200
    assert result["modes"]["hybrid"]["ndcg@10"] >= SCIFACT_FLOOR, result
    assert result["modes"]["hybrid"]["recall@100"] >= 0.9, result
