"""Generated corpora and invariant checks shared by flow, CLI and benchmark tests."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from citadel.models import DeadLetterRecord, IndexRunRecord, RunSummary
from citadel.registry import Registry
from citadel.settings import Settings
from citadel.store import VectorStore

WORDS = (
    "vector index cache embedding search query document chunk model server batch retry flow task "
    "registry payload collection cosine similarity latency throughput worker schedule deployment "
    "paragraph sentence token context window redis qdrant postgres prefect ollama"
).split()


def paragraph(rng: random.Random, words: int = 60) -> str:
    sentences = []
    while words > 0:
        n = min(words, rng.randint(6, 14))
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
        words -= n
    return " ".join(sentences)


def write_corpus(root: Path, files: int, paragraphs: int = 6, seed: int = 7) -> list[Path]:
    """``files`` markdown documents of ``paragraphs`` paragraphs each, deterministic for a seed."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(files):
        path = root / f"doc_{number:05d}.md"
        path.write_text(f"# Document {number}\n\n" + "\n\n".join(paragraph(rng) for _ in range(paragraphs)) + "\n")
        paths.append(path)
    return paths


def append_paragraph(paths: list[Path]) -> None:
    """Edit documents as a user often does: a closing paragraph appended (their earlier chunks stay)."""
    for path in paths:
        path.write_text(path.read_text() + "\n\nAn appended paragraph about the harbour and its tides.\n")


async def index_with_own_backends(source: str | list[dict[str, Any]], collection: str, **overrides: Any) -> RunSummary:
    """Index ``source`` with backends of its own, opened and closed around the run, as a new
    ``citadel index`` process would (with settings from the environment and ``overrides``)."""
    from citadel.indexing import index_source
    from citadel.resources import Resources

    resources = Resources(Settings(**overrides))
    try:
        return await index_source(resources, source, collection)
    finally:
        await resources.aclose()


async def index_state(settings: Settings, collection: str) -> tuple[int, int]:
    """(vectors in the store, chunks in the registry) of a collection."""
    registry = Registry(settings.registry_url)
    await registry.init()
    try:
        chunks = await registry.count_chunks(collection)
    finally:
        await registry.aclose()
    store = VectorStore.connect(url=settings.qdrant_url, api_key=None, path=settings.qdrant_path)
    return await store.count(collection), chunks


async def runs_of(settings: Settings, collection: str) -> list[IndexRunRecord]:
    """The runs the registry records for a collection (of its last 100), newest first."""
    registry = Registry(settings.registry_url)
    await registry.init()
    try:
        return [run for run in await registry.recent_runs(limit=100) if run.collection == collection]
    finally:
        await registry.aclose()


async def dead_letters_of(settings: Settings, collection: str) -> list[DeadLetterRecord]:
    """The dead letters the registry holds for a collection, newest first."""
    registry = Registry(settings.registry_url)
    await registry.init()
    try:
        return await registry.dead_letters(collection)
    finally:
        await registry.aclose()
