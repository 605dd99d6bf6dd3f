"""The Qdrant wrapper in embedded mode: collection checks, batched idempotent upserts, search, delete.

Every behaviour is checked twice: on a loaded store (qdrant-client's own), and on a store opened
by ``connect``, which writes its rows without loading it until a search needs it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from citadel.errors import CollectionMismatchError, ConfigurationError
from citadel.store import Hit, VectorStore, close_local_clients, local_client

DIMS = 4
MODEL = "test-model"


def pid(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


def unit(*values: float) -> list[float]:
    vector = np.asarray(values, dtype=np.float32)
    return (vector / np.linalg.norm(vector)).tolist()


@pytest.fixture(params=["loaded", "rows"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[VectorStore]:
    if request.param == "loaded":
        yield VectorStore(local_client(tmp_path / "qdrant"), batch_size=5)
    else:
        yield VectorStore.connect(url=None, api_key=None, path=tmp_path / "qdrant", batch_size=5)
    close_local_clients()


async def test_ensure_collection_creates_with_size_and_model(store: VectorStore, collection_name: str) -> None:
    """A new collection gets the embedder's size, cosine distance and the model in its metadata."""
    assert not await store.collection_exists(collection_name)
    assert await store.count(collection_name) == 0
    await store.ensure_collection(collection_name, DIMS, MODEL)
    assert await store.collection_exists(collection_name)
    info = store.client.get_collection(collection_name)
    assert info.config.params.vectors.size == DIMS
    assert info.config.params.vectors.distance.name == "COSINE"
    assert (info.config.metadata or {}).get("model") == MODEL
    assert (info.config.metadata or {}).get("dimensions") == DIMS
    await store.ensure_collection(collection_name, DIMS, MODEL)  # same choice again is fine


async def test_other_dimensions_or_model_refused(store: VectorStore, collection_name: str) -> None:
    """Another store on the same collection with a different size or model is refused."""
    await store.ensure_collection(collection_name, DIMS, MODEL)
    other = VectorStore(store.client)
    with pytest.raises(CollectionMismatchError, match="holds 4-dimensional vectors"):
        await other.ensure_collection(collection_name, DIMS * 2, MODEL)
    with pytest.raises(CollectionMismatchError, match="was built with model 'test-model'"):
        await other.ensure_collection(collection_name, DIMS, "other-model")
    await other.ensure_collection(collection_name, DIMS, MODEL)


async def test_second_ensure_on_same_store_still_checks(store: VectorStore, collection_name: str) -> None:
    """The same store instance asked for another size or model must refuse too, not trust its memo."""
    await store.ensure_collection(collection_name, DIMS, MODEL)
    with pytest.raises(CollectionMismatchError):
        await store.ensure_collection(collection_name, DIMS * 2, MODEL)
    with pytest.raises(CollectionMismatchError):
        await store.ensure_collection(collection_name, DIMS, "other-model")


async def test_upsert_in_batches_is_idempotent(store: VectorStore, collection_name: str) -> None:
    """More points than one batch are all written; writing the same ids again adds none."""
    await store.ensure_collection(collection_name, DIMS, MODEL)
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(23, DIMS)).astype(np.float32)
    ids = [pid(i) for i in range(23)]
    payloads = [{"document_id": f"doc-{i}", "chunk_index": i} for i in range(23)]
    assert len(ids) > store.batch_size
    await store.upsert(collection_name, ids, vectors, payloads)
    assert await store.count(collection_name) == 23
    await store.upsert(collection_name, ids, vectors, payloads)
    assert await store.count(collection_name) == 23
    await store.upsert(collection_name, [], [], [])
    assert await store.count(collection_name) == 23


async def test_upsert_overwrites_payload_and_vector(store: VectorStore, collection_name: str) -> None:
    """Writing an existing id replaces its vector and payload."""
    await store.ensure_collection(collection_name, DIMS, MODEL)
    await store.upsert(collection_name, [pid(0)], [unit(1, 0, 0, 0)], [{"text": "old"}])
    await store.upsert(collection_name, [pid(0)], [unit(0, 1, 0, 0)], [{"text": "new"}])
    (hit,) = await store.search(collection_name, unit(0, 1, 0, 0), limit=5)
    assert hit.payload["text"] == "new"
    assert hit.score == pytest.approx(1.0, abs=1e-5)


@pytest.fixture
async def filled(store: VectorStore, collection_name: str) -> VectorStore:
    """Five points: axis vectors and near-axis vectors, with document and source payloads."""
    await store.ensure_collection(collection_name, DIMS, MODEL)
    vectors = [unit(1, 0, 0, 0), unit(0.9, 0.1, 0, 0), unit(0, 1, 0, 0), unit(0, 0, 1, 0), unit(0.7, 0.7, 0, 0)]
    payloads = [
        {"document_id": "d0", "source": "a", "chunk_index": 0, "text": "t0", "lang": "en"},
        {"document_id": "d1", "source": "b", "chunk_index": 0, "text": "t1", "lang": "en"},
        {"document_id": "d2", "source": "c", "chunk_index": 0, "text": "t2", "lang": "fr"},
        {"document_id": "d3", "source": "a", "chunk_index": 1, "text": "t3", "lang": "fr"},
        {"document_id": "d4", "source": "b", "chunk_index": 2, "text": "t4", "lang": "de"},
    ]
    await store.upsert(collection_name, [pid(i) for i in range(5)], vectors, payloads)
    return store


async def test_search_orders_by_score_and_limits(filled: VectorStore, collection_name: str) -> None:
    """Results come nearest first and at most ``limit`` of them."""
    hits = await filled.search(collection_name, unit(1, 0, 0, 0), limit=3)
    assert [h.payload["document_id"] for h in hits] == ["d0", "d1", "d4"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert all(isinstance(h, Hit) and h.id == pid(int(h.payload["document_id"][1])) for h in hits)
    assert len(await filled.search(collection_name, unit(1, 0, 0, 0), limit=10)) == 5


async def test_search_score_threshold(filled: VectorStore, collection_name: str) -> None:
    """Points scoring below the threshold are left out."""
    hits = await filled.search(collection_name, unit(1, 0, 0, 0), limit=10, score_threshold=0.9)
    assert {h.payload["document_id"] for h in hits} == {"d0", "d1"}
    assert all(h.score >= 0.9 for h in hits)


async def test_search_filters_exact_and_any(filled: VectorStore, collection_name: str) -> None:
    """A scalar filter matches exactly; a list matches any of its values; filters combine with AND."""
    only_a = await filled.search(collection_name, unit(1, 0, 0, 0), limit=10, filters={"source": "a"})
    assert {h.payload["document_id"] for h in only_a} == {"d0", "d3"}
    a_or_c = await filled.search(collection_name, unit(1, 0, 0, 0), limit=10, filters={"source": ["a", "c"]})
    assert {h.payload["document_id"] for h in a_or_c} == {"d0", "d2", "d3"}
    both = await filled.search(collection_name, unit(1, 0, 0, 0), limit=10, filters={"source": ("a", "b"), "lang": "en"})
    assert {h.payload["document_id"] for h in both} == {"d0", "d1"}
    by_int = await filled.search(collection_name, unit(1, 0, 0, 0), limit=10, filters={"chunk_index": 0})
    assert {h.payload["document_id"] for h in by_int} == {"d0", "d1", "d2"}
    none = await filled.search(collection_name, unit(1, 0, 0, 0), limit=10, filters={"source": "zzz"})
    assert none == []


async def test_search_filters_on_arrays_and_refuses_what_the_store_cannot_hold(store: VectorStore, collection_name: str) -> None:
    """Qdrant's array syntax addresses any element (``cities[].name``, ``tags[]``); an integer beyond
    64 bits or a key outside the syntax is a configuration error, not a failure of the store."""
    await store.ensure_collection(collection_name, DIMS, MODEL)
    payloads = [
        {"document_id": "oslo", "metadata": {"cities": [{"name": "Oslo"}, {"name": "Bergen"}], "tags": ["north", "coast"]}},
        {"document_id": "rome", "metadata": {"cities": [{"name": "Rome"}], "tags": ["south"]}},
    ]
    await store.upsert(collection_name, [pid(0), pid(1)], [unit(1, 0, 0, 0), unit(0, 1, 0, 0)], payloads)

    async def found(filters: dict[str, object]) -> set[str]:
        return {h.payload["document_id"] for h in await store.search(collection_name, unit(1, 1, 0, 0), limit=10, filters=filters)}

    assert await found({"metadata.cities[].name": "Bergen"}) == {"oslo"}
    assert await found({"metadata.cities[].name": ["Rome", "Paris"]}) == {"rome"}
    assert await found({"metadata.tags[]": "south"}) == {"rome"}
    assert await found({"metadata.tags[]": "coast", "metadata.cities[].name": "Oslo"}) == {"oslo"}
    assert await found({"metadata.cities[].name": "Paris"}) == set()
    for key in ["metadata.cities[", "metadata..tags", "metadata.tags[0]", "metadata tags"]:
        with pytest.raises(ConfigurationError, match="is not a payload field"):
            await found({key: "x"})
    for big in [10**20, -(2**63) - 1, [1, 2**63]]:
        with pytest.raises(ConfigurationError, match="beyond 64-bit integers"):
            await found({"metadata.count": big})
    assert await found({"metadata.count": 2**63 - 1}) == set()  # the largest one is fine


async def test_hit_as_dict_lifts_known_fields(filled: VectorStore, collection_name: str) -> None:
    """as_dict exposes id, score, document, chunk, text and source, leaving the rest as payload."""
    (hit,) = await filled.search(collection_name, unit(0, 0, 1, 0), limit=1)
    shown = hit.as_dict()
    assert shown["id"] == pid(3)
    assert (shown["document_id"], shown["chunk_index"], shown["text"], shown["source"]) == ("d3", 1, "t3", "a")
    assert shown["payload"] == {"lang": "fr"}
    assert hit.payload["document_id"] == "d3", "as_dict must not modify the hit"


async def test_delete_by_ids(filled: VectorStore, collection_name: str) -> None:
    """Deleted ids disappear from count and search; unknown ids and missing collections are ignored."""
    await filled.delete(collection_name, [pid(0), pid(1), pid(99)])
    assert await filled.count(collection_name) == 3
    hits = await filled.search(collection_name, unit(1, 0, 0, 0), limit=10)
    assert {h.payload["document_id"] for h in hits} == {"d2", "d3", "d4"}
    await filled.delete(collection_name, [])
    await filled.delete("missing_" + collection_name, [pid(2)])
    assert await filled.count(collection_name) == 3


async def test_delete_more_than_one_delete_batch(store: VectorStore, collection_name: str) -> None:
    """Deleting more ids than one delete request holds removes them all."""
    await store.ensure_collection(collection_name, DIMS, MODEL)
    ids = [pid(i) for i in range(47)]
    await store.upsert(collection_name, ids, np.ones((47, DIMS), dtype=np.float32), [{} for _ in ids])
    await store.delete(collection_name, ids[:45])
    assert await store.count(collection_name) == 2


async def test_retrieve_vectors(filled: VectorStore, collection_name: str) -> None:
    """Stored vectors come back by id; ids that do not exist are simply absent."""
    found = await filled.retrieve_vectors(collection_name, [pid(2), pid(3), pid(77)])
    assert set(found) == {pid(2), pid(3)}
    np.testing.assert_allclose(found[pid(2)], unit(0, 1, 0, 0), atol=1e-6)
    np.testing.assert_allclose(found[pid(3)], unit(0, 0, 1, 0), atol=1e-6)
    assert await filled.retrieve_vectors(collection_name, []) == {}


async def test_search_missing_collection_is_configuration_error(store: VectorStore, collection_name: str) -> None:
    """Searching a collection that was never created says so clearly."""
    with pytest.raises(ConfigurationError, match="does not exist yet"):
        await store.search(collection_name, unit(1, 0, 0, 0))


async def test_delete_collection_forgets_check(store: VectorStore, collection_name: str) -> None:
    """After deleting a collection it can be created again with another size."""
    await store.ensure_collection(collection_name, DIMS, MODEL)
    await store.delete_collection(collection_name)
    assert not await store.collection_exists(collection_name)
    await store.ensure_collection(collection_name, DIMS * 2, MODEL)
    assert store.client.get_collection(collection_name).config.params.vectors.size == DIMS * 2


def test_local_client_is_shared_per_path(tmp_path: Path) -> None:
    """One embedded client per folder (Qdrant locks it), however the path is spelled."""
    first = local_client(tmp_path / "q1")
    assert local_client(tmp_path / "q1") is first
    assert local_client(tmp_path / "sub" / ".." / "q1") is first
    assert local_client(tmp_path / "q2") is not first
    assert (tmp_path / "q1").is_dir()


def test_connect_without_url_uses_shared_local_client(tmp_path: Path) -> None:
    """VectorStore.connect with no URL is embedded mode on the shared client."""
    store = VectorStore.connect(url=None, api_key=None, path=tmp_path / "q", batch_size=64)
    assert store.client is local_client(tmp_path / "q")
    assert store.batch_size == 64
    assert store.is_server is False


async def test_a_large_embedded_store_gets_one_line_of_advice_not_qdrants_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """qdrant-client warns at every open and at the first large upsert; Citadel says it once, its way
    (once when the rows outgrow it, once more when a later process loads the store)."""
    import warnings

    from citadel.store import LOCAL_MODE_COMFORT, localclients

    count = LOCAL_MODE_COMFORT + 1
    ids = [str(uuid.UUID(int=i)) for i in range(count)]
    with warnings.catch_warnings(record=True) as leaked, caplog.at_level("WARNING", logger="citadel"):
        store = VectorStore.connect(url=None, api_key=None, path=tmp_path / "large", batch_size=256)
        await store.ensure_collection("big", 2, "m")
        await store.upsert("big", ids, np.ones((count, 2), dtype=np.float32), [{}] * count)
        close_local_clients()
        localclients._advised.clear()
        reopened = VectorStore.connect(url=None, api_key=None, path=tmp_path / "large")
        await reopened.search("big", [1.0, 0.0])  # loaded: said again, once
        await reopened.search("big", [0.0, 1.0])
        close_local_clients()
    assert not [w for w in leaked if "Local mode" in str(w.message)], "qdrant-client's own warning does not leak"
    advice = [r.getMessage() for r in caplog.records if r.name == "citadel.store.localclients"]
    assert len(advice) == 2 and all("over 20,000 points in big (20,001)" in a and "CITADEL_QDRANT_URL" in a for a in advice)


async def test_a_reopened_store_keeps_its_vectors_as_float32_with_room_to_grow(tmp_path: Path) -> None:
    """Qdrant's load builds a full float64 array (twice the memory, and the next point added copies
    it whole); a reopened store holds float32 rows with spare capacity and answers as before."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((50, DIMS)).astype(np.float32)
    ids = [pid(n) for n in range(50)]
    store = VectorStore.connect(url=None, api_key=None, path=tmp_path / "q")
    await store.ensure_collection("c", DIMS, MODEL)
    await store.upsert("c", ids, vectors, [{"n": n} for n in range(50)])
    query = rng.standard_normal(DIMS).tolist()
    before = [(hit.id, round(hit.score, 5)) for hit in await store.search("c", query, limit=10)]
    close_local_clients()

    reopened = VectorStore.connect(url=None, api_key=None, path=tmp_path / "q")
    loaded = reopened.client._client.collections["c"].vectors[""]
    assert loaded.dtype == np.float32
    assert loaded.shape[0] > 50, "spare rows: adding a point does not copy the array"
    assert [(hit.id, round(hit.score, 5)) for hit in await reopened.search("c", query, limit=10)] == before
    added = unit(*query)
    await reopened.upsert("c", [pid(99)], [added], [{"n": 99}])
    assert (await reopened.search("c", added, limit=1))[0].id == pid(99)
    assert await reopened.count("c") == 51
    close_local_clients()
    again = VectorStore.connect(url=None, api_key=None, path=tmp_path / "q")
    assert await again.count("c") == 51 and (await again.search("c", added, limit=1))[0].id == pid(99)
    close_local_clients()


async def test_search_by_document_gives_each_documents_nearest_chunk(store: VectorStore, collection_name: str) -> None:
    """Three chunks of one document nearest to the query: by chunk they fill the top; by document
    that document comes once, by its best chunk, and ``limit`` counts documents."""
    await store.ensure_collection(collection_name, DIMS, MODEL)
    vectors = [unit(1, 0, 0, 0), unit(0.95, 0.05, 0, 0), unit(0.9, 0.1, 0, 0), unit(0.6, 0.4, 0, 0), unit(0, 0, 1, 0)]
    payloads = [{"document_id": doc, "chunk_index": index} for doc, index in
                [("long", 0), ("long", 1), ("long", 2), ("short", 0), ("far", 0)]]
    await store.upsert(collection_name, [pid(i) for i in range(5)], vectors, payloads)
    by_chunk = await store.search(collection_name, unit(1, 0, 0, 0), limit=3)
    assert [h.payload["document_id"] for h in by_chunk] == ["long", "long", "long"]
    by_document = await store.search(collection_name, unit(1, 0, 0, 0), limit=2, by_document=True)
    assert [(h.payload["document_id"], h.payload["chunk_index"]) for h in by_document] == [("long", 0), ("short", 0)]
    assert by_document[0].score == pytest.approx(1.0, abs=1e-5)
    filtered = await store.search(collection_name, unit(1, 0, 0, 0), limit=5, by_document=True, filters={"document_id": ["short", "far"]})
    assert [h.payload["document_id"] for h in filtered] == ["short", "far"]
