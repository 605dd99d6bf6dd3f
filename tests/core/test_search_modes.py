"""Search in its three modes on every store: the embedded store loaded and unloaded (its rows
written directly) and a Qdrant server over REST. Lexical vectors are written with every point, the
fusion ranks what either leg finds, filters and the threshold hold in every mode, and a collection
written before lexical vectors is searched dense and says so.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import models

from citadel.store import VectorStore, close_local_clients, local_client
from citadel.store.fusion import SearchOptions
from citadel.store.lexical import LEXICAL_VECTOR, query_vector
from citadel.store.lexicalindex import LexicalIndex
from tests.support.qdrant_server import QdrantTestServer

DIMS = 4
MODEL = "test-model"
# (text, dense vector, source): the dense vectors and the words point at different chunks on purpose.
CHUNKS = [
    ("Zebras graze the savanna in striped herds.", (1, 0, 0, 0), "animals"),
    ("Gluons bind quarks in quantum chromodynamics.", (0, 1, 0, 0), "physics"),
    ("A zebra crossing slows the traffic.", (0, 0, 1, 0), "roads"),
    ("Quarks and gluons form a plasma at high temperature.", (0, 0, 0, 1), "physics"),
    ("Herds of wildebeest follow the zebras.", (0.9, 0, 0.1, 0), "animals"),
]


def pid(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


def unit(values: tuple[float, ...]) -> list[float]:
    vector = np.asarray(values, dtype=np.float32)
    return (vector / np.linalg.norm(vector)).tolist()


@pytest.fixture(params=["loaded", "rows", pytest.param("server", marks=pytest.mark.system)])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[VectorStore]:
    if request.param == "loaded":
        yield VectorStore(local_client(tmp_path / "qdrant"), batch_size=2)
    elif request.param == "rows":
        yield VectorStore.connect(url=None, api_key=None, path=tmp_path / "qdrant", batch_size=2)
    else:
        with QdrantTestServer(tmp_path / "qdrant-server") as server:
            remote = VectorStore.connect(url=server.url, api_key=None, path=tmp_path / "unused", batch_size=2)
            yield remote
            remote.client.close()
    close_local_clients()


async def fill(store: VectorStore, name: str) -> None:
    await store.ensure_collection(name, DIMS, MODEL)
    payloads = [{"text": text, "source": source, "document_id": f"doc-{n // 2}", "chunk_index": n % 2}
                for n, (text, _, source) in enumerate(CHUNKS)]
    await store.upsert(name, [pid(n) for n in range(len(CHUNKS))], [unit(v) for _, v, _ in CHUNKS], payloads)


async def find(store: VectorStore, name: str, mode: str, text: str, vector: tuple[float, ...], **kwargs: object) -> list[str]:
    found = await store.search(name, unit(vector), text=text, options=SearchOptions(mode=mode), **kwargs)  # type: ignore[arg-type]
    assert found.mode == mode
    return [str(hit.payload["text"]) for hit in found]


async def test_each_mode_ranks_by_what_it_should(store: VectorStore, collection_name: str) -> None:
    """The query's words say gluons while its vector points at zebras: sparse finds the words, dense
    the vector, hybrid both (the chunks neither leg found are not in it)."""
    await fill(store, collection_name)
    dense = await find(store, collection_name, "dense", "gluons", (1, 0, 0, 0), limit=2)
    sparse = await find(store, collection_name, "sparse", "gluons", (1, 0, 0, 0), limit=5)
    hybrid = await find(store, collection_name, "hybrid", "gluons", (1, 0, 0, 0), limit=5)
    assert dense == [CHUNKS[0][0], CHUNKS[4][0]]
    assert set(sparse) == {CHUNKS[1][0], CHUNKS[3][0]}  # only chunks holding the word score
    assert set(hybrid[:2]) <= {CHUNKS[0][0], CHUNKS[1][0], CHUNKS[3][0]} and CHUNKS[1][0] in hybrid[:3]
    assert CHUNKS[0][0] in hybrid  # the dense leg's best is fused in
    # Stemming: "zebra" finds "Zebras" and "zebra"; stopwords alone find nothing.
    assert set(await find(store, collection_name, "sparse", "zebra", (1, 0, 0, 0), limit=5)) == {
        CHUNKS[0][0], CHUNKS[2][0], CHUNKS[4][0]}
    assert await find(store, collection_name, "sparse", "the of a", (1, 0, 0, 0), limit=5) == []


async def test_filters_threshold_and_documents_hold_in_every_mode(store: VectorStore, collection_name: str) -> None:
    await fill(store, collection_name)
    for mode in ("dense", "sparse", "hybrid"):
        only = await find(store, collection_name, mode, "zebras gluons", (0, 1, 0, 0), limit=5, filters={"source": "animals"})
        assert only and {text for text in only} <= {CHUNKS[0][0], CHUNKS[4][0]}, mode
        best = await store.search(collection_name, unit((0, 1, 0, 0)), text="gluons", limit=5, options=SearchOptions(mode=mode))
        above = await store.search(collection_name, unit((0, 1, 0, 0)), text="gluons", limit=5,
                                   score_threshold=best[0].score + 1e-3, options=SearchOptions(mode=mode))
        assert list(above) == [], mode
        kept = await store.search(collection_name, unit((0, 1, 0, 0)), text="gluons", limit=5,
                                  score_threshold=best[0].score - 1e-6, options=SearchOptions(mode=mode))
        assert [hit.id for hit in kept][:1] == [best[0].id], mode
        documents = await store.search(collection_name, unit((1, 0, 0, 0)), text="zebras quarks", limit=5, by_document=True,
                                       options=SearchOptions(mode=mode))
        ids = [hit.payload["document_id"] for hit in documents]
        assert len(ids) == len(set(ids)) and len(ids) >= 2, mode


async def test_the_lexical_index_follows_writes(store: VectorStore, collection_name: str) -> None:
    """A deleted point leaves the lexical results at once, and a new one joins them."""
    await fill(store, collection_name)
    assert len(await find(store, collection_name, "sparse", "gluons", (1, 0, 0, 0), limit=5)) == 2
    await store.delete(collection_name, [pid(1)])
    assert await find(store, collection_name, "sparse", "gluons", (1, 0, 0, 0), limit=5) == [CHUNKS[3][0]]
    await store.upsert(collection_name, [pid(9)], [unit((0, 1, 1, 0))], [{"text": "gluon fields", "document_id": "new"}])
    assert set(await find(store, collection_name, "sparse", "gluons", (1, 0, 0, 0), limit=5)) == {CHUNKS[3][0], "gluon fields"}


async def test_a_collection_without_lexical_vectors_is_searched_dense_and_says_so_once(
    store: VectorStore, collection_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A collection made before lexical vectors keeps working: written dense only, searched dense."""
    store.client.create_collection(collection_name, vectors_config=models.VectorParams(size=DIMS, distance=models.Distance.COSINE),
                                   metadata={"model": MODEL, "dimensions": DIMS})
    await fill(store, collection_name)
    with caplog.at_level(logging.WARNING, logger="citadel.store.searching"):
        for _ in range(2):
            found = await store.search(collection_name, unit((0, 1, 0, 0)), text="zebras", limit=1, options=SearchOptions(mode="hybrid"))
            assert found.mode == "dense" and found[0].payload["text"] == CHUNKS[1][0]
    said = [r.getMessage() for r in caplog.records if "no lexical vectors" in r.getMessage()]
    assert len(said) == 1 and collection_name in said[0] and "--blue-green" in said[0]


def test_the_embedded_lexical_index_scores_as_qdrant_does(tmp_path: Path) -> None:
    """Citadel's inverted index over an embedded collection gives the scores of Qdrant's own sparse
    search with the IDF modifier, which a server computes the same way."""
    import asyncio

    client = local_client(tmp_path / "qdrant")
    store = VectorStore(client, batch_size=64)
    rng = np.random.default_rng(3)
    words = ["gluon", "quark", "zebra", "plasma", "savanna", "herd", "traffic", "field", "lattice", "spin"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(150)]
    asyncio.run(store.ensure_collection("idf", DIMS, MODEL))
    asyncio.run(store.upsert("idf", [pid(n) for n in range(len(texts))], rng.random((len(texts), DIMS)).astype(np.float32),
                             [{"text": t} for t in texts]))
    index = LexicalIndex.build(client, "idf")
    for query in ("gluon plasma", "zebra", "spin lattice field herd"):
        terms = query_vector(query)
        ours = index.search(terms, 20)
        theirs = client.query_points("idf", query=models.SparseVector(indices=terms.indices, values=terms.values),
                                     using=LEXICAL_VECTOR, limit=20).points
        assert [round(score, 4) for _, score in ours] == [round(p.score, 4) for p in theirs]
        assert {pid_ for pid_, _ in ours} == {str(p.id) for p in theirs} or len(ours) == 20
    close_local_clients()


async def test_a_blue_green_rebuild_adds_lexical_vectors_without_embedding_again(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection indexed before lexical vectors searches dense; `index --blue-green` builds its next
    version with them from the stored vectors (nothing embedded), and then it searches hybrid."""
    import citadel.store.localclients as localclients
    import citadel.store.vectorstore as vectorstore
    from citadel.indexing import build_and_switch, index_source
    from citadel.resources import Resources
    from citadel.search import search_with
    from citadel.settings import Settings
    from citadel.testing.corpus import write_corpus

    def without_lexical(client: object, name: str, dimensions: int, model: str) -> None:
        client.create_collection(  # type: ignore[attr-defined]
            name, vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE),
            metadata={"model": model, "dimensions": dimensions, "created_by": "citadel"},
        )

    corpus = tmp_path / "corpus"
    write_corpus(corpus, 12, seed=4)
    (corpus / "marker.md").write_text("The zebraquartz lantern guards the harbour.\n")
    with monkeypatch.context() as patch:  # the collection as an earlier release made it
        patch.setattr(localclients, "create_collection", without_lexical)
        patch.setattr(vectorstore, "create_collection", without_lexical)
        resources = Resources(Settings())
        try:
            first = await index_source(resources, str(corpus), collection_name)
        finally:
            await resources.aclose()
    resources = Resources(Settings())  # a new process's: an empty embedding cache
    try:
        before = await search_with(resources, "zebraquartz", collection_name, limit=3)
        assert before.mode == "dense"
        rebuilt = await build_and_switch(resources, str(corpus), collection_name)
        assert rebuilt.chunks_embedded == 0 and rebuilt.cache_hits == 0
        assert rebuilt.chunks_reused == first.chunks_embedded > 0
        after = await search_with(resources, "zebraquartz", collection_name, limit=3, mode="sparse")
        assert after.mode == "sparse" and after.hits[0].document_id == str(corpus / "marker.md")
        assert (await search_with(resources, "zebraquartz", collection_name, limit=3)).mode == "hybrid"
    finally:
        await resources.aclose()


async def test_the_lexical_vectors_are_read_from_the_loaded_collection_as_scroll_reads_them(tmp_path: Path) -> None:
    """The fast read of an embedded collection's lexical vectors (its client's own lists) gives what
    scroll gives, deleted points and points without words left out: a qdrant-client that lays them
    out otherwise is read through scroll, and this fails naming the version to look at."""
    import qdrant_client

    from citadel.store.lexicalindex import _local_collection, _scrolled, lexical_vectors

    store = VectorStore(local_client(tmp_path / "qdrant"), batch_size=2)
    await fill(store, "fast")
    await store.upsert("fast", [pid(7)], [unit((1, 1, 0, 0))], [{"document_id": "none"}])  # no text: no words
    await store.delete("fast", [pid(2)])
    assert _local_collection(store.client, "fast") is not None, (
        f"qdrant-client {qdrant_client.__version__ if hasattr(qdrant_client, '__version__') else '?'} keeps an embedded "
        "collection's sparse vectors otherwise: update citadel.store.lexicalindex._local_collection"
    )
    fast = {pid_: (v.indices, v.values) for pid_, v in lexical_vectors(store.client, "fast")}
    slow = {pid_: (v.indices, v.values) for pid_, v in _scrolled(store.client, "fast")}
    assert fast == slow and pid(2) not in fast and len(fast) == len(CHUNKS)  # 5 - 1 deleted + 1 without words
    assert fast[pid(7)] == ([], [])
    close_local_clients()
