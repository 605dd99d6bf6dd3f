"""Built-in steps run for real on the embedded defaults: WordLlama embedder, LRU cache, embedded
Qdrant and a SQLite registry in a private data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from citadel.documents import chunk_text
from citadel.indexing import index_source
from citadel.resources import Resources
from citadel.settings import Settings
from citadel.workflows import (
    OrchestrationRequired,
    StepContext,
    WorkflowDefinition,
    get_step_type,
    run_workflow,
)

TOPICS = {
    "redis.md": "Redis keeps the embedding cache. Cache keys hash the text; eviction follows the TTL.",
    "qdrant.md": "Qdrant stores vectors in collections and answers cosine similarity queries quickly.",
    "prefect.md": "Prefect schedules flows and retries failed tasks with exponential backoff.",
    "postgres.md": "Postgres holds the document registry with content hashes and dead letters.",
}


def write_docs(root: Path, topics: dict[str, str] = TOPICS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in topics.items():
        (root / name).write_text(f"# {name}\n\n{text}\n")
    return root


def ctx(services: Any = None, step_id: str = "s") -> StepContext:
    return StepContext("test", step_id, {}, services)


async def test_chunk_step_outputs_exact_slices(data_dir: Path) -> None:
    """Chunks are the core chunker's slices with index, offsets and hash; texts line up with them."""
    text = "First paragraph about caches.\n\nSecond paragraph about vectors. It has two sentences."
    out = await get_step_type("chunk")({"text": text, "chunk_size": 40, "chunk_overlap": 5}, ctx())
    expected = chunk_text(text, 40, 5)
    assert [c["text"] for c in out["chunks"]] == out["texts"] == [c.text for c in expected]
    for item, chunk in zip(out["chunks"], expected, strict=True):
        assert item == {"index": chunk.index, "text": chunk.text, "start": chunk.start, "end": chunk.end, "hash": chunk.hash}
        assert text[item["start"] : item["end"]] == item["text"]
    many = await get_step_type("chunk")({"texts": ["one. two.", "three"], "chunk_size": 5}, ctx())
    assert [(c["text_index"], c["index"]) for c in many["chunks"]] == [(0, 0), (0, 1), (1, 0)]
    default = await get_step_type("chunk")({"text": "short"}, ctx())  # sizes from the settings
    assert default["texts"] == ["short"]


async def test_embedding_step_builds_or_shares_resources(data_dir: Path) -> None:
    """Without services the step builds its own backends; with Resources they are shared (and cached)."""
    step = get_step_type("embedding")
    alone = await step({"texts": ["alpha beta", "gamma"]}, ctx())
    assert alone["model"] == "wordllama-l2_supercat-256d" and alone["dimensions"] == 256
    assert len(alone["vectors"]) == 2 and all(len(v) == 256 for v in alone["vectors"])
    assert (alone["embedded"], alone["cache_hits"]) == (2, 0)
    resources = Resources(Settings())
    try:
        first = await step({"text": "alpha beta"}, ctx(resources))
        again = await step({"texts": ["alpha beta", "alpha beta"]}, ctx(resources))
        assert first["vectors"] == [alone["vectors"][0]]
        assert (again["embedded"], again["cache_hits"]) == (0, 2)
        assert resources._embedder is not None  # the caller's resources were used, and left open
        small = await step({"text": "alpha", "embedder": {"kind": "hashing", "dimensions": 64}}, ctx(resources))
        assert (small["dimensions"], small["model"]) == (64, "citadel-hashing-v1-64d")
        assert resources.embedder.dimensions == 256  # another embedder got its own resources
    finally:
        await resources.aclose()


async def test_index_then_search_finds_the_document_and_reruns_change_nothing(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    """Index a folder, search it, and index it again: the second run finds every document unchanged."""
    docs = write_docs(tmp_path / "corpus")
    defn = WorkflowDefinition.model_validate(
        {
            "workflow_id": "index-and-search",
            "context": {"collection": collection_name, "query": "qdrant cosine similarity vectors"},
            "steps": [
                {"step_id": "index", "type": "index", "parameters": {"source": str(docs), "collection": "${context.collection}"}},
                {
                    "step_id": "search",
                    "type": "search",
                    "depends_on": ["index"],
                    "parameters": {"query": "${context.query}", "collection": "${context.collection}", "limit": 2},
                },
            ],
        }
    )
    first = await run_workflow(defn)
    summary = first["index"]
    assert (summary["added"], summary["updated"], summary["unchanged"], summary["deleted"], summary["failed"]) == (4, 0, 0, 0, 0)
    assert summary["chunks_embedded"] == summary["chunks_written"] >= 4
    assert summary["collection"] == collection_name and summary["model"] == "wordllama-l2_supercat-256d"
    hits = first["search"]["hits"]
    assert hits and hits[0]["document_id"].endswith("qdrant.md")
    assert "Qdrant stores vectors" in hits[0]["text"]
    second = await run_workflow(defn)
    again = second["index"]
    assert again["unchanged"] == len(TOPICS)
    assert (again["added"], again["updated"], again["deleted"], again["chunks_embedded"]) == (0, 0, 0, 0)
    assert again["vector_store_opened"] is False  # an unchanged run never opens the store
    assert second["search"]["hits"][0]["document_id"] == hits[0]["document_id"]


async def test_index_source_prunes_and_updates_with_shared_resources(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    """index_source is the plain loop: changed files update, removed ones are pruned from a folder."""
    docs = write_docs(tmp_path / "corpus")
    resources = Resources(Settings())
    try:
        assert (await index_source(resources, str(docs), collection_name))["added"] == 4
        (docs / "prefect.md").unlink()
        (docs / "redis.md").write_text("# redis\n\nRedis now also queues background jobs.\n")
        summary = await index_source(resources, str(docs), collection_name)
        assert (summary["added"], summary["updated"], summary["unchanged"], summary["deleted"]) == (0, 1, 2, 1)
        kept = await index_source(resources, str(docs), collection_name, prune=False)
        assert (kept["unchanged"], kept["deleted"]) == (3, 0)
        registry = await resources.registry()
        runs = await registry.recent_runs(3)
        assert {run["status"] for run in runs} == {"completed"}
        assert await registry.count_chunks(collection_name) == 3  # one chunk per remaining short document
        assert await resources.store.count(collection_name) == 3
    finally:
        await resources.aclose()


async def test_index_step_with_inline_records_and_search_filters(data_dir: Path, collection_name: str) -> None:
    """Inline records index under their source name; prune is opt-in; bad records are counted as failed."""
    records = [
        {"id": "a", "text": "The cache stores embeddings by hash.", "metadata": {"lang": "en"}},
        {"id": "b", "text": "Vectors live in collections.", "metadata": {"lang": "en"}},
        {"id": "c", "text": "   "},
    ]
    resources = Resources(Settings())
    try:
        index = get_step_type("index")
        first = await index({"source": records, "collection": collection_name, "source_name": "inline-test"}, ctx(resources))
        assert (first["added"], first["failed"], first["source"]) == (2, 1, "inline-test")
        kept = await index({"source": records[:1], "collection": collection_name, "source_name": "inline-test"}, ctx(resources))
        assert (kept["unchanged"], kept["deleted"]) == (1, 0)
        pruned = await index(
            {"source": records[:1], "collection": collection_name, "source_name": "inline-test", "prune": True}, ctx(resources)
        )
        assert pruned["deleted"] == 1
        parameters = {"source": records[:1], "collection": collection_name, "source_name": "inline-test", "full": True}
        full = await index(parameters, ctx(resources))
        assert (full["updated"], full["unchanged"]) == (1, 0)
        search = get_step_type("search")
        found = await search({"query": "cache embeddings", "collection": collection_name, "filters": {"document_id": "a"}}, ctx(resources))
        assert [hit["document_id"] for hit in found["hits"]] == ["a"]
        assert found["hits"][0]["payload"]["metadata"] == {"lang": "en"}
        none = await search({"query": "cache", "collection": collection_name, "filters": {"document_id": "b"}}, ctx(resources))
        assert none["hits"] == []
    finally:
        await resources.aclose()


async def test_chunk_then_embed_through_references(data_dir: Path) -> None:
    """A typed reference hands the chunk step's list of texts to the embedding step."""
    defn = WorkflowDefinition.model_validate(
        {
            "workflow_id": "chunk-embed",
            "context": {"doc": "One sentence here. Another sentence there. A third one closes."},
            "steps": [
                {"step_id": "embed", "type": "embedding", "parameters": {"texts": "${steps.chunk.output.texts}"}},
                {"step_id": "chunk", "type": "chunk", "parameters": {"text": "${context.doc}", "chunk_size": 25, "chunk_overlap": 0}},
            ],
        }
    )
    outputs = await run_workflow(defn)
    assert len(outputs["embed"]["vectors"]) == len(outputs["chunk"]["texts"]) >= 2
    assert list(outputs) == ["chunk", "embed"]


async def test_search_errors_are_clear(data_dir: Path, collection_name: str) -> None:
    """Searching a collection that does not exist, or with another embedder, says what to do."""
    from citadel.errors import CollectionMismatchError, ConfigurationError

    search = get_step_type("search")
    with pytest.raises(ConfigurationError, match="does not exist yet"):
        await search({"query": "anything", "collection": collection_name}, ctx())
    await get_step_type("index")({"source": [{"id": "x", "text": "hello"}], "collection": collection_name}, ctx())
    with pytest.raises(CollectionMismatchError, match="holds wordllama-l2_supercat-256d vectors"):
        await search({"query": "hello", "collection": collection_name, "embedder": {"kind": "hashing", "dimensions": 64}}, ctx())


async def test_flow_step_needs_the_orchestration_layer(data_dir: Path) -> None:
    """The core only declares the flow step; running it says which layer provides it.

    A fresh registry: the Prefect layer runs workflows with a copy whose ``flow`` runner it replaced.
    """
    from citadel.workflows import StepRegistry, register_builtins

    core_only = StepRegistry()
    register_builtins(core_only)
    with pytest.raises(OrchestrationRequired, match="'flow' step type needs the orchestration layer"):
        await core_only.get("flow")({"deployment": "index-corpus/nightly", "parameters": {"source": "."}}, ctx())
